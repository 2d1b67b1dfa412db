"""``k3py server``: flags in K3s's names, parsed once into :class:`ServerSettings`, then served.

Flags also come from ``K3PY_<FLAG>`` variables and ``/etc/k3py/config.yaml`` (see
:mod:`k3py.cli`). The heavy imports (aiohttp, cryptography, the datastore) happen in
:func:`run`, so ``k3py --help`` stays light.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from k3py.cluster.server.agentflags import add_agent_arguments, agent_settings_from
from k3py.cluster.server.settings import (
    DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
    DEFAULT_MAX_REQUESTS_INFLIGHT,
    ServerSettings,
)
from k3py.errors import UsageError

CONFIG_FILES = ("/etc/k3py/config.yaml",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_agent_arguments(parser)
    add = parser.add_argument
    add("--data-dir", default="/var/lib/k3py", help="state directory (default %(default)s)")
    add("--bind-address", default="0.0.0.0", help="address to listen on (default %(default)s)")
    add(
        "--advertise-address",
        default="",
        help="address other nodes reach this server at (default: the bind address or the"
        " machine's first address)",
    )
    add("--https-listen-port", type=int, default=6443, help="API port (default %(default)s)")
    add(
        "--tls-san",
        action="append",
        default=[],
        help="extra host name or IP for the serving certificate (repeatable)",
    )
    add("--token", default=None, help="the join token or its secret (default: generated)")
    add("--token-file", default=None, help="file holding the join token")
    add(
        "--write-kubeconfig",
        default="/etc/k3py/k3py.yaml",
        help="where to write the admin kubeconfig (default %(default)s)",
    )
    add(
        "--write-kubeconfig-mode",
        default="600",
        help="file mode of the kubeconfig, octal (default %(default)s)",
    )
    add(
        "--datastore-endpoint",
        default="",
        help="datastore: empty for the embedded SQLite, sqlite://<path> or memory://",
    )
    add(
        "--datastore-sync",
        choices=("normal", "full"),
        default="normal",
        help="full: every acknowledged write survives power loss (default %(default)s)",
    )
    add(
        "--cluster-reset",
        action="store_true",
        help="start with an empty datastore even though this data dir held a cluster",
    )
    add("--cluster-cidr", default="10.42.0.0/16", help="pod network (default %(default)s)")
    add("--service-cidr", default="10.43.0.0/16", help="service network (default %(default)s)")
    add(
        "--cluster-dns",
        default="",
        help="cluster DNS service address (default: the service CIDR's tenth, 10.43.0.10)",
    )
    add(
        "--cluster-domain",
        default="cluster.local",
        help="cluster domain of the DNS names (default %(default)s)",
    )
    add(
        "--disable",
        action="append",
        default=[],
        metavar="NAME",
        help="do not run this packaged component (repeatable): servicelb; K3s's coredns,"
        " traefik, local-storage and metrics-server are accepted and have nothing to turn off",
    )
    add("--no-deploy", action="append", default=[], metavar="NAME", help=argparse.SUPPRESS)
    add(
        "--disable-agent",
        action="store_true",
        help="do not run an agent for this node next to the server",
    )
    add(
        "--max-requests-inflight",
        type=int,
        default=DEFAULT_MAX_REQUESTS_INFLIGHT,
        help="non-mutating requests served at once before 429 (default %(default)s)",
    )
    add(
        "--max-mutating-requests-inflight",
        type=int,
        default=DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
        help="mutating requests served at once before 429 (default %(default)s)",
    )
    add(
        "--disable-scheduler",
        action="store_true",
        help="do not run the scheduler in this server",
    )
    add(
        "--disable-controller",
        action="append",
        default=[],
        metavar="NAME",
        help="do not run this controller (repeatable): deployment, replicaset, daemonset, job,"
        " endpoints, nodelifecycle, garbagecollector",
    )
    add(
        "--node-monitor-grace-period",
        type=float,
        default=40.0,
        help="seconds without a Lease renewal before a node is marked NotReady"
        " (default %(default)s)",
    )
    add("--node-monitor-period", type=float, default=5.0, help=argparse.SUPPRESS)
    # Datastore history retention; tests shorten it to exercise 410 Gone.
    add("--datastore-compact-min-revisions", type=int, default=1000, help=argparse.SUPPRESS)
    add("--datastore-compact-min-age", type=float, default=300.0, help=argparse.SUPPRESS)
    add("--datastore-compact-interval", type=float, default=60.0, help=argparse.SUPPRESS)


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.token_file:
        path = Path(args.token_file)
        try:
            text = path.read_text().strip()
        except OSError as err:
            raise UsageError(f"cannot read --token-file {path}: {err.strerror or err}") from None
        if not text:
            raise UsageError(f"--token-file {path} is empty")
        return text
    return None


def _controllers(names: list[str]) -> tuple[str, ...]:
    from k3py.cluster.server.controllers.base import ALL_CONTROLLERS

    wanted = tuple(n.strip() for value in names for n in value.split(",") if n.strip())
    for name in wanted:
        if name not in ALL_CONTROLLERS:
            known = ", ".join(c for c in ALL_CONTROLLERS if c != "scheduler")
            raise UsageError(f"--disable-controller {name!r} is not a controller; known: {known}")
    return wanted


# K3s's packaged components: servicelb exists in k3py (a controller); the others have no
# counterpart (the cluster DNS is built into the agents) and are accepted so that K3s install
# lines work unchanged.
K3S_COMPONENTS = ("coredns", "servicelb", "traefik", "local-storage", "metrics-server")


def _note(text: str) -> None:
    print(f"k3py: note: {text}", file=sys.stderr)


def _components(args: argparse.Namespace) -> tuple[str, ...]:
    old = [n.strip() for value in args.no_deploy for n in value.split(",") if n.strip()]
    if old:
        _note("--no-deploy is K3s's old name for --disable; read as --disable")
    wanted = [n.strip() for value in args.disable for n in value.split(",") if n.strip()]
    for name in [*wanted, *old]:
        if name not in K3S_COMPONENTS:
            raise UsageError(
                f"--disable {name!r} is not a component; known: {', '.join(K3S_COMPONENTS)}"
            )
        if name != "servicelb":
            _note(f"k3py runs no {name}; --disable {name} has nothing to turn off")
    return tuple(dict.fromkeys([*wanted, *old]))


def settings_from(args: argparse.Namespace) -> ServerSettings:
    from k3py.cluster.server.kubeconfig import KubeconfigError, parse_mode

    if not 0 <= args.https_listen_port <= 65535:
        raise UsageError(f"--https-listen-port {args.https_listen_port} is not a TCP port")
    try:
        mode = parse_mode(args.write_kubeconfig_mode)
    except KubeconfigError as err:
        raise UsageError(str(err)) from None
    for flag, value in (
        ("--cluster-cidr", args.cluster_cidr),
        ("--service-cidr", args.service_cidr),
    ):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise UsageError(f"{flag} {value!r} is not a CIDR such as 10.43.0.0/16") from None
    if args.cluster_dns:
        try:
            ipaddress.IPv4Address(args.cluster_dns)
        except ValueError:
            raise UsageError(
                f"--cluster-dns {args.cluster_dns!r} is not an IPv4 address such as 10.43.0.10"
            ) from None
    return ServerSettings(
        data_dir=Path(args.data_dir),
        bind_address=args.bind_address,
        advertise_address=args.advertise_address,
        https_listen_port=args.https_listen_port,
        tls_sans=tuple(args.tls_san),
        token=_token(args),
        write_kubeconfig=Path(args.write_kubeconfig),
        write_kubeconfig_mode=mode,
        datastore_endpoint=args.datastore_endpoint,
        datastore_sync=args.datastore_sync,
        cluster_reset=bool(args.cluster_reset),
        cluster_cidr=args.cluster_cidr,
        service_cidr=args.service_cidr,
        disable_agent=bool(args.disable_agent),
        agent=agent_settings_from(args),
        max_requests_inflight=max(1, args.max_requests_inflight),
        max_mutating_requests_inflight=max(1, args.max_mutating_requests_inflight),
        compact_min_revisions=args.datastore_compact_min_revisions,
        compact_min_age_seconds=args.datastore_compact_min_age,
        compact_interval_seconds=args.datastore_compact_interval,
        disable_scheduler=bool(args.disable_scheduler),
        disable_controllers=_controllers(args.disable_controller),
        node_monitor_period=max(0.1, args.node_monitor_period),
        node_monitor_grace_period=max(0.1, args.node_monitor_grace_period),
        cluster_dns=args.cluster_dns,
        cluster_domain=str(args.cluster_domain).strip(".") or "cluster.local",
        disable_components=_components(args),
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from k3py.cluster.server import embedded_agent
    from k3py.cluster.server.app import serve

    settings = settings_from(args)
    agent = embedded_agent.start(settings, debug=bool(getattr(args, "debug", False)))
    try:
        asyncio.run(serve(settings))
    finally:
        embedded_agent.stop(agent)
    return 0
