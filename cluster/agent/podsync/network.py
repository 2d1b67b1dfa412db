"""The pod network seam: how a pod sandbox gets its network and its IP.

The sandbox owns the pod's network namespace; every other container of the pod joins it.
:class:`RuntimeBridge` is ``--flannel-backend none``: the sandbox sits on the container
runtime's default bridge and the pod IP is the one the runtime gave it (pods on one node reach
each other, nothing on the host is touched). The pod network proper, with flannel's backends,
is :class:`k3py.cluster.agent.network.podnet.FlannelNetwork`. A pod network
implements :class:`PodNetwork`: the network mode the sandbox is created with, then ``attach``
once the sandbox runs (wire its namespace, return the pod IP) and ``detach`` before it is
removed.
"""

from __future__ import annotations

from typing import Protocol

from k3py.cluster.agent.podsync.spec import Pod, spec
from k3py.cluster.agent.runtime import ContainerInfo


class PodNetwork(Protocol):
    def sandbox_network(self, pod: Pod) -> str | None:
        """The network mode to create the sandbox with (None: the runtime's default)."""
        ...

    async def attach(self, pod: Pod, sandbox: ContainerInfo) -> str:
        """Wire a running sandbox into the pod network; returns the pod IP. Called again for
        a sandbox found running after an agent restart, so it must be idempotent."""
        ...

    async def detach(self, pod: Pod, sandbox: ContainerInfo) -> None: ...


class RuntimeBridge:
    """Pods on the runtime's default bridge (Docker's ``docker0``), host-network pods on the
    host."""

    def __init__(self, host_ip: str) -> None:
        self._host_ip = host_ip

    def sandbox_network(self, pod: Pod) -> str | None:
        return "host" if spec(pod).get("hostNetwork") else None

    async def attach(self, pod: Pod, sandbox: ContainerInfo) -> str:
        return self._host_ip if spec(pod).get("hostNetwork") else sandbox.ip

    async def detach(self, pod: Pod, sandbox: ContainerInfo) -> None:
        return None
