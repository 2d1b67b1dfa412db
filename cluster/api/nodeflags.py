"""The node's flags, shared by ``k3py agent`` and ``k3py server`` (K3s's server takes them too).

One definition of ``--node-name``, ``--node-ip``, ``--node-label``, ``--node-taint``,
``--with-node-id``, ``--container-runtime-endpoint``, ``--pause-image``, ``--docker``,
``--flannel-backend``, ``--flannel-iface`` and ``--resolv-conf``. The agent gives them its
defaults; the server leaves them empty so that the ``k3py agent`` child it starts keeps its own.
It lives here because the agent and the server never import each other.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Iterable

from k3py.errors import UsageError

FLANNEL_BACKENDS = ("vxlan", "host-gw", "none")
RUNTIME_ENDPOINT = "unix:///var/run/docker.sock"
PAUSE_IMAGE = "k3py/pause:1"
RESOLV_CONF = "/etc/resolv.conf"


def add_node_arguments(parser: argparse.ArgumentParser, *, agent_defaults: bool) -> None:
    """Add the node's flags; without ``agent_defaults`` the defaulted ones default to ""."""

    def default(value: str) -> str:
        return value if agent_defaults else ""

    add = parser.add_argument
    add("--node-name", default="", help="this node's name (default: the host name)")
    add("--with-node-id", action="store_true", help="append a stable random id to the node name")
    add("--node-ip", "-i", action="append", default=[], help="address to advertise (repeatable)")
    add("--node-label", action="append", default=[], help="label to register with, key=value")
    add(
        "--node-taint", action="append", default=[], help="taint to register with, key=value:Effect"
    )
    add(
        "--container-runtime-endpoint",
        default=default(RUNTIME_ENDPOINT),
        help=f"the Docker engine's socket (default {RUNTIME_ENDPOINT})",
    )
    add(
        "--pause-image",
        default=default(PAUSE_IMAGE),
        help=f"the pod sandbox image, built when absent (default {PAUSE_IMAGE})",
    )
    # K3s's switch from containerd to Docker: Docker is the engine k3py always runs on.
    add("--docker", action="store_true", help="use Docker (k3py's engine; accepted as K3s's flag)")
    add(
        "--flannel-backend",
        choices=FLANNEL_BACKENDS,
        default="vxlan",
        help="pod network backend: vxlan, host-gw, or none to leave the host's network alone"
        " (default %(default)s)",
    )
    add("--flannel-iface", default="", help="interface for the pod network (default: --node-ip's)")
    add(
        "--resolv-conf",
        default=default(RESOLV_CONF),
        help=f"the node's resolvers for names outside the cluster (default {RESOLV_CONF})",
    )


def check_node_ips(addresses: Iterable[str]) -> None:
    """Refuse a ``--node-ip`` that is not an IP address."""
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"--node-ip {address!r} is not an IP address") from None
