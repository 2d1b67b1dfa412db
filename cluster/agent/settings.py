"""The agent's settings: one frozen object built from flags, environment and config files.

:func:`k3py.cluster.agent.cli.run` builds it once; everything below receives it (or the part it
needs). The node's local settings live here, apart from what the server tells the agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class AgentSettings(NamedTuple):
    server_url: str
    token: str | None
    token_file: Path | None
    data_dir: Path
    node_name: str
    node_ips: tuple[str, ...] = ()
    node_labels: tuple[tuple[str, str], ...] = ()
    node_taints: tuple[dict[str, str], ...] = ()
    with_node_id: bool = False
    runtime: str = "docker"
    container_runtime_endpoint: str = "unix:///var/run/docker.sock"
    pause_image: str = "k3py/pause:1"
    max_pods: int = 110
    # The pod network (k3py.cluster.agent.network): vxlan, host-gw or none (the runtime's
    # bridge, nothing touched on the host).
    flannel_backend: str = "vxlan"
    flannel_iface: str = ""
    cluster_cidr: str = "10.42.0.0/16"
    # Services: the cluster DNS address and domain pods are given (K3s's --cluster-dns,
    # --cluster-domain), the service CIDR (reverse lookups), the resolvers names outside the
    # cluster go to (K3s's --resolv-conf).
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    service_cidr: str = "10.43.0.0/16"
    resolv_conf: Path = Path("/etc/resolv.conf")
    lease_seconds: float = 10.0
    # /healthz for the board's supervisor (the kubelet's port; 0 turns it off), and how often
    # CPU and memory are sampled for kubectl top (metrics-server's 15 s resolution).
    healthz_bind_address: str = "127.0.0.1"
    healthz_port: int = 10248
    usage_interval_seconds: float = 15.0
    # How long to wait for a server that does not answer yet (boot order, server restarts) on
    # first join; after joining, the agent never needs the server to start.
    join_timeout_seconds: float = 600.0

    @property
    def agent_dir(self) -> Path:
        return self.data_dir / "agent"


def flannel_enabled(settings: AgentSettings) -> bool:
    """Whether the agent runs its own pod network (not for ``--flannel-backend none`` or
    hollow nodes)."""
    return settings.flannel_backend != "none" and settings.runtime != "fake"
