"""The agent's observability parts, built together and wired into the agent at a few points.

:class:`AgentObservability` holds the registry, the timed runtime the agent uses instead of the
bare one, the usage sampler, and the local health server. The agent hands it its pod host (to
time pod starts), its tunnel and pod sync (read at scrape time), and asks it for the tunnel
stream handlers; everything else stays out of the agent's own modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k3py.cluster.agent.metrics.healthz import HealthCheck, HealthServer
from k3py.cluster.agent.metrics.registry import AgentMetrics
from k3py.cluster.agent.metrics.runtime import TimedRuntime
from k3py.cluster.agent.metrics.usage import UsageSampler
from k3py.cluster.agent.runtime import ContainerRuntime
from k3py.cluster.client.clock import Clock

if TYPE_CHECKING:  # imported by the methods: the agent builds this before its pod sync
    from k3py.cluster.agent.metrics.streams import StreamKindHandler
    from k3py.cluster.agent.podsync.worker import PodHost


class AgentObservability:
    def __init__(
        self,
        runtime: ContainerRuntime,
        node_name: str,
        data_dir: Path,
        clock: Clock,
        *,
        usage_interval: float,
        healthz_address: str,
        healthz_port: int,
    ) -> None:
        self.metrics = AgentMetrics(data_dir)
        self.runtime = TimedRuntime(runtime, self.metrics)
        self.sampler = UsageSampler(self.runtime, node_name, clock, usage_interval)
        self.checks: dict[str, HealthCheck] = {"ping": lambda: None}
        self.health = (
            HealthServer(healthz_address, healthz_port, self.checks) if healthz_port else None
        )

    def pod_host(self, inner: PodHost) -> PodHost:
        from k3py.cluster.agent.metrics.pods import StartTimedHost

        return StartTimedHost(inner, self.metrics.pod_start)

    def streams(self) -> dict[str, StreamKindHandler]:
        from k3py.cluster.agent.metrics.streams import observability_streams

        return observability_streams(self.metrics, self.sampler)

    def watch(
        self,
        pods: Callable[[], Mapping[str, Any]],
        tunnel: Callable[[], tuple[bool, int]],
        checks: Mapping[str, HealthCheck],
    ) -> None:
        """What the collectors and the health checks read, from the running agent."""
        self.metrics.live.pods = pods
        self.metrics.live.tunnel = tunnel
        self.checks.update(checks)

    async def start(self) -> None:
        if self.health is not None:
            await self.health.start()

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.close()
