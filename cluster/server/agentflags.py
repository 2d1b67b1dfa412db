"""The agent's flags on ``k3py server``: K3s's server takes them for the node it runs on.

``--node-name``, ``--node-ip``, ``--node-label``, ``--node-taint``, ``--with-node-id``,
``--container-runtime-endpoint``, ``--pause-image``, ``--flannel-backend``,
``--flannel-iface`` and ``--resolv-conf`` (with the server's own ``--cluster-cidr``) are parsed into
:class:`NodeAgentSettings` and handed, as flags, to the ``k3py agent`` child that
:mod:`k3py.cluster.server.embedded_agent` starts; the agent validates them as it does its own.
The flags themselves are defined once, in :mod:`k3py.cluster.api.nodeflags`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from k3py.cluster.api.nodeflags import add_node_arguments, check_node_ips


@dataclass(frozen=True)
class NodeAgentSettings:
    node_name: str = ""
    node_ips: tuple[str, ...] = ()
    node_labels: tuple[str, ...] = ()
    node_taints: tuple[str, ...] = ()
    with_node_id: bool = False
    container_runtime_endpoint: str = ""
    pause_image: str = ""
    flannel_backend: str = "vxlan"
    flannel_iface: str = ""
    resolv_conf: str = ""

    def argv(self, cluster_cidr: str) -> list[str]:
        """The flags for ``k3py agent`` (empty values keep the agent's defaults)."""
        argv = ["--flannel-backend", self.flannel_backend, "--cluster-cidr", cluster_cidr]
        for flag, value in (
            ("--node-name", self.node_name),
            ("--container-runtime-endpoint", self.container_runtime_endpoint),
            ("--pause-image", self.pause_image),
            ("--flannel-iface", self.flannel_iface),
            ("--resolv-conf", self.resolv_conf),
        ):
            if value:
                argv += [flag, value]
        for flag, values in (
            ("--node-ip", self.node_ips),
            ("--node-label", self.node_labels),
            ("--node-taint", self.node_taints),
        ):
            for value in values:
                argv += [flag, value]
        if self.with_node_id:
            argv.append("--with-node-id")
        return argv


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    # Empty defaults: the agent child keeps its own.
    add_node_arguments(parser, agent_defaults=False)


def agent_settings_from(args: argparse.Namespace) -> NodeAgentSettings:
    check_node_ips(args.node_ip)
    return NodeAgentSettings(
        node_name=args.node_name,
        node_ips=tuple(args.node_ip),
        node_labels=tuple(args.node_label),
        node_taints=tuple(args.node_taint),
        with_node_id=bool(args.with_node_id),
        container_runtime_endpoint=args.container_runtime_endpoint,
        pause_image=args.pause_image,
        flannel_backend=args.flannel_backend,
        flannel_iface=args.flannel_iface,
        resolv_conf=args.resolv_conf,
    )
