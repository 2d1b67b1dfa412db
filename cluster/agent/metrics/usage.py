"""CPU and memory of the node and of each running container, sampled for ``kubectl top``.

Every ``interval`` seconds (15 by default, metrics-server's resolution) :class:`UsageSampler`
asks the runtime for one statistics snapshot per running container of this node's pods (one
call each, no streaming) and reads the node's CPU time and memory from ``/proc``. CPU usage is
the rate between two samples, in nanocores (a container seen for the first time is measured
since it started); memory is the working set. Only the latest summary is kept, in the form of
:mod:`k3py.cluster.api.usage`, and the server reads it over the tunnel when asked.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from typing import Any

from k3py.cluster.agent.errors import RuntimeUnavailable
from k3py.cluster.agent.metrics import nodestats
from k3py.cluster.agent.runtime import (
    LABEL_CONTAINER_NAME,
    LABEL_NODE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    ContainerInfo,
    ContainerRuntime,
)
from k3py.cluster.client.clock import Clock

logger = logging.getLogger("k3py.agent.usage")

DEFAULT_INTERVAL = 15.0


@dataclass
class _Previous:
    cpu_ns: int
    at: float


def _text(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class UsageSampler:
    def __init__(
        self,
        runtime: ContainerRuntime,
        node_name: str,
        clock: Clock,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._runtime = runtime
        self._clock = clock
        self._node = node_name
        self.interval = interval
        self._containers: dict[str, _Previous] = {}
        self._node_previous: _Previous | None = None
        self._summary: dict[str, Any] = {}

    def summary(self) -> bytes:
        """The latest summary as JSON (``{}`` before the first sample)."""
        return json.dumps(self._summary, separators=(",", ":")).encode()

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except RuntimeUnavailable as err:
                logger.debug("usage not sampled", extra={"fields": {"error": str(err)}})
            await self._clock.sleep(self.interval)

    def _node_sample(self, now: float) -> dict[str, Any] | None:
        try:
            busy_ns = int(nodestats.busy_seconds() * 1e9)
            memory = nodestats.working_set()
        except (OSError, ValueError):
            return None
        previous, self._node_previous = self._node_previous, _Previous(busy_ns, now)
        if previous is None or now <= previous.at:
            return None
        window = now - previous.at
        return {
            "timestamp": _text(self._clock.now()),
            "window": round(window, 1),
            "cpu": (busy_ns - previous.cpu_ns) / window,
            "memory": memory,
        }

    async def sample(self) -> None:
        """Take one sample of the node and its containers and keep it as the summary."""
        now = self._clock.monotonic()
        node = self._node_sample(now)
        containers = [
            c
            for c in await self._runtime.list_containers({LABEL_NODE: self._node})
            if c.status == "running" and c.kind != "sandbox"
        ]
        pods: dict[tuple[str, str], list[dict[str, Any]]] = {}
        seen: dict[str, _Previous] = {}
        for container in containers:
            sample = await self._container_sample(container, now, seen)
            if sample is None:
                continue
            key = (
                container.labels.get(LABEL_POD_NAMESPACE, ""),
                container.labels.get(LABEL_POD_NAME, ""),
            )
            pods.setdefault(key, []).append(sample)
        self._containers = seen
        summary: dict[str, Any] = {
            "pods": [
                {
                    "namespace": namespace,
                    "name": name,
                    "timestamp": _text(self._clock.now()),
                    "window": self.interval,
                    "containers": samples,
                }
                for (namespace, name), samples in sorted(pods.items())
            ]
        }
        if node is not None:
            summary["node"] = node
        elif "node" in self._summary:
            summary["node"] = self._summary["node"]
        self._summary = summary

    async def _container_sample(
        self, container: ContainerInfo, now: float, seen: dict[str, _Previous]
    ) -> dict[str, Any] | None:
        stats = await self._runtime.container_stats(container.id)
        if stats is None:
            return None
        seen[container.id] = _Previous(stats.cpu_ns, now)
        previous = self._containers.get(container.id)
        if previous is not None and now > previous.at:
            cpu = (stats.cpu_ns - previous.cpu_ns) / (now - previous.at)
        elif container.started_at is not None:
            lifetime = max(1.0, (self._clock.now() - container.started_at).total_seconds())
            cpu = stats.cpu_ns / lifetime
        else:
            cpu = 0.0
        return {
            "name": container.labels.get(LABEL_CONTAINER_NAME, container.name),
            "cpu": max(0.0, cpu),
            "memory": stats.memory_working_set,
        }
