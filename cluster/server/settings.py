"""The server's settings: one frozen object built once from flags, environment and config file.

``k3py server`` parses its command line (plus ``K3PY_*`` variables and
``/etc/k3py/config.yaml``) into a :class:`ServerSettings` and hands it to the application
factory; nothing below the CLI reads flags or the environment again.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from k3py.cluster.server.agentflags import NodeAgentSettings

# The API server's limits, as kube-apiserver's defaults or the budgets.
MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024
DEFAULT_MAX_REQUESTS_INFLIGHT = 400
DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT = 200


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path = Path("/var/lib/k3py")
    bind_address: str = "0.0.0.0"
    advertise_address: str = ""  # empty: the bind address, else this machine's first address
    https_listen_port: int = 6443
    tls_sans: tuple[str, ...] = ()
    token: str | None = None
    write_kubeconfig: Path = Path("/etc/k3py/k3py.yaml")
    write_kubeconfig_mode: int = 0o600
    datastore_endpoint: str = ""  # empty: the embedded SQLite database under data_dir
    datastore_sync: str = "normal"  # "normal" or "full"
    # Start an empty cluster even though the PKI shows one existed (--cluster-reset).
    cluster_reset: bool = False
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    service_node_port_range: tuple[int, int] = (30000, 32767)
    disable_agent: bool = False
    agent: NodeAgentSettings = field(default_factory=NodeAgentSettings)  # this node's agent
    max_requests_inflight: int = DEFAULT_MAX_REQUESTS_INFLIGHT
    max_mutating_requests_inflight: int = DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT
    max_request_body_bytes: int = MAX_REQUEST_BODY_BYTES
    # How long one request may work (patching, retrying after conflicts): kube-apiserver's
    # --request-timeout default.
    request_timeout_seconds: float = 60.0
    # Open connections in total and per client address (loopback is not limited per client).
    max_connections: int = 16384
    max_connections_per_client: int = 1024
    # Datastore history kept for watches and paginated lists (kine keeps about as much).
    compact_min_revisions: int = 1000
    compact_min_age_seconds: float = 300.0
    compact_interval_seconds: float = 60.0
    # How often the server sends watch bookmarks to clients that allow them.
    watch_bookmark_interval: float = 60.0
    # A watch whose client has not taken an event for this long is closed.
    watch_write_timeout_seconds: float = 30.0
    # The scheduler and controllers running in the server (k3py.cluster.server.controllers).
    disable_scheduler: bool = False
    disable_controllers: tuple[str, ...] = ()
    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 40.0
    # Cluster DNS (K3s's --cluster-dns, --cluster-domain); empty: the service CIDR's tenth address.
    cluster_dns: str = ""
    cluster_domain: str = "cluster.local"
    # Packaged components turned off with --disable (K3s's names; only servicelb exists here).
    disable_components: tuple[str, ...] = ()

    @property
    def kubernetes_service_ip(self) -> str:
        """The first address of the service CIDR, as kube-apiserver gives ``kubernetes``."""
        network = ipaddress.ip_network(self.service_cidr, strict=False)
        return str(network.network_address + 1)

    @property
    def cluster_dns_ip(self) -> str:
        """The cluster DNS address: ``--cluster-dns``, else the service CIDR's tenth (as K3s)."""
        if self.cluster_dns:
            return self.cluster_dns
        network = ipaddress.ip_network(self.service_cidr, strict=False)
        return str(network.network_address + 10)
