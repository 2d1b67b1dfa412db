"""``k3py agent``: join a cluster and run this node's pods (K3s's flags and environment).

``--server``/``K3PY_URL`` and ``--token``/``K3PY_TOKEN`` (or ``--token-file``) are needed only
to join; the node's credentials are kept in ``<data-dir>/agent`` so a restarted agent needs
neither token nor network to bring its pods back. Heavy imports happen in :func:`run`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from k3py.cluster.agent.settings import AgentSettings
from k3py.cluster.api.nodeflags import FLANNEL_BACKENDS, add_node_arguments, check_node_ips
from k3py.errors import UsageError

CONFIG_FILES = ("/etc/k3py/config.yaml",)
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--server", "-s", default="", help="the server to join, https://HOST:6443 [$K3PY_URL]")
    add("--token", "-t", default=None, help="the cluster's join token (K10…) [$K3PY_TOKEN]")
    add("--token-file", default=None, help="file holding the join token")
    add("--data-dir", "-d", default="/var/lib/k3py", help="state directory (default %(default)s)")
    add_node_arguments(parser, agent_defaults=True)
    add("--cluster-cidr", default="10.42.0.0/16", help="the pods' network (default %(default)s)")
    add("--max-pods", type=int, default=110, help="pods this node accepts (default %(default)s)")
    add("--cluster-dns", default="10.43.0.10", help="cluster DNS address (default %(default)s)")
    add(
        "--cluster-domain",
        default="cluster.local",
        help="cluster domain of the DNS names (default %(default)s)",
    )
    add("--service-cidr", default="10.43.0.0/16", help=argparse.SUPPRESS)
    # "fake" runs pods without processes: hollow nodes for scale tests.
    add("--runtime", choices=("docker", "fake"), default="docker", help=argparse.SUPPRESS)
    add(
        "--healthz-bind-address",
        default="127.0.0.1",
        help="address of the agent's /healthz (default %(default)s)",
    )
    add(
        "--healthz-port",
        type=int,
        default=10248,
        help="port of the agent's /healthz, 0 to turn it off (default %(default)s)",
    )
    # Seconds between CPU/memory samples for kubectl top (tests shorten it).
    add("--usage-interval", type=float, default=15.0, help=argparse.SUPPRESS)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--node-label {text!r}: expected key=value")
    prefix = key.strip().partition("/")[0]
    if prefix.endswith(("node-role.kubernetes.io", "node-restriction.kubernetes.io")):
        # NodeRestriction refuses these from the node itself; the server would refuse to
        # register the node at all.
        raise UsageError(
            f"--node-label {text!r}: a node may not set {prefix}/ labels on itself; set them"
            " with kubectl label node as an administrator"
        )
    return key.strip(), value.strip()


def _taint(text: str) -> dict[str, str]:
    body, sep, effect = text.rpartition(":")
    if not sep or effect not in _TAINT_EFFECTS:
        raise UsageError(
            f"--node-taint {text!r}: expected key=value:Effect with Effect one of "
            f"{', '.join(_TAINT_EFFECTS)}"
        )
    key, _, value = body.partition("=")
    if not key:
        raise UsageError(f"--node-taint {text!r}: the key is empty")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def settings_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> AgentSettings:
    env = dict(os.environ if env is None else env)
    server = str(args.server or env.get("K3PY_URL", "")).rstrip("/")
    if server and not server.startswith("https://"):
        raise UsageError(f"--server {server!r}: the server URL must start with https://")
    token = args.token or env.get("K3PY_TOKEN") or None
    node_name = (args.node_name or socket.gethostname()).strip().lower()
    if not node_name:
        raise UsageError("--node-name is empty and this machine has no host name")
    if args.max_pods < 1:
        raise UsageError("--max-pods must be at least 1")
    if not 0 <= args.healthz_port <= 65535:
        raise UsageError("--healthz-port must be between 0 and 65535")
    if args.usage_interval <= 0:
        raise UsageError("--usage-interval must be positive")
    try:
        ipaddress.IPv4Address(args.cluster_dns)
    except ValueError:
        raise UsageError(f"--cluster-dns {args.cluster_dns!r} is not an IPv4 address") from None
    if args.flannel_backend not in FLANNEL_BACKENDS:
        raise UsageError(
            f"--flannel-backend {args.flannel_backend!r}: expected one of "
            f"{', '.join(FLANNEL_BACKENDS)}"
        )
    try:
        cluster_cidr = str(ipaddress.ip_network(args.cluster_cidr, strict=False))
    except ValueError:
        raise UsageError(
            f"--cluster-cidr {args.cluster_cidr!r} is not a CIDR such as 10.42.0.0/16"
        ) from None
    check_node_ips(args.node_ip)
    return AgentSettings(
        server_url=server,
        token=str(token).strip() if token else None,
        token_file=Path(args.token_file) if args.token_file else None,
        data_dir=Path(args.data_dir),
        node_name=node_name,
        node_ips=tuple(args.node_ip),
        node_labels=tuple(_label(t) for t in args.node_label),
        node_taints=tuple(_taint(t) for t in args.node_taint),
        with_node_id=bool(args.with_node_id),
        runtime=args.runtime,
        container_runtime_endpoint=args.container_runtime_endpoint,
        pause_image=args.pause_image,
        max_pods=args.max_pods,
        healthz_bind_address=args.healthz_bind_address,
        healthz_port=args.healthz_port,
        usage_interval_seconds=args.usage_interval,
        cluster_dns=args.cluster_dns,
        cluster_domain=str(args.cluster_domain).strip(".") or "cluster.local",
        service_cidr=args.service_cidr,
        resolv_conf=Path(args.resolv_conf),
        flannel_backend=args.flannel_backend,
        flannel_iface=args.flannel_iface,
        cluster_cidr=cluster_cidr,
    )


def _exit_with_parent(env: Mapping[str, str]) -> None:
    """Die with the server that started us (``K3PY_PARENT_PID``), even when it is SIGKILLed.

    The server's own agent is its child process; without this a ``kill -9`` of the server would
    leave an agent behind that a restarted server then duplicates.
    """
    parent = env.get("K3PY_PARENT_PID")
    if not parent:
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from k3py.cluster.agent import memory

    memory.no_huge_pages()  # before the heap grows
    from k3py.cluster.agent.agent import run_agent

    _exit_with_parent(os.environ)
    settings = settings_from(args)
    memory.tune()
    asyncio.run(run_agent(settings))
    return 0
