"""The agent's Prometheus registry, under the kubelet's metric names where it has one.

:class:`AgentMetrics` owns one :class:`prometheus_client.CollectorRegistry` per agent (never the
library's global registry: tests run several agents in one process). Counters and histograms
are fed by :mod:`.runtime` and :mod:`.pods`; the rest (pods by phase, the tunnel's state, the
node's CPU, memory, disk and network) is read at scrape time by collectors over the agent's
live objects, so nothing is copied on every change. :meth:`AgentMetrics.exposition` is what the
server's ``/api/v1/nodes/NAME/proxy/metrics`` returns.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from k3py.cluster.agent.metrics.nodestats import NodeCollector

RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POD_START_BUCKETS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 60.0, 120.0)
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


class AgentMetrics:
    def __init__(self, data_dir: Path) -> None:
        # No ``_created`` series: they double what a board keeps, and the kubelet has none.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        registry = self.registry = CollectorRegistry(auto_describe=False)
        operation = ("operation_type",)
        self.runtime_operations = Counter(
            "kubelet_runtime_operations",
            "Cumulative number of runtime operations by operation type.",
            operation,
            registry=registry,
        )
        self.runtime_errors = Counter(
            "kubelet_runtime_operations_errors",
            "Cumulative number of runtime operation errors by operation type.",
            operation,
            registry=registry,
        )
        self.runtime_durations = Histogram(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            operation,
            buckets=RUNTIME_BUCKETS,
            registry=registry,
        )
        self.starts = Counter(
            "kubelet_started_containers",
            "Cumulative number of containers started",
            ("container_type",),
            registry=registry,
        )
        self.start_errors = Counter(
            "kubelet_started_containers_errors",
            "Cumulative number of errors when starting containers",
            ("container_type",),
            registry=registry,
        )
        self.restarts = Counter(
            "k3py_agent_container_restarts",
            "Containers started again after their previous instance ended.",
            registry=registry,
        )
        self.images_loaded = Counter(
            "k3py_agent_images_loaded",
            "Images loaded from air-gap archives.",
            registry=registry,
        )
        self.pod_start = Histogram(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod"
            " starting to run",
            buckets=POD_START_BUCKETS,
            registry=registry,
        )
        self.live = LiveState()
        registry.register(_LiveCollector(self.live))
        registry.register(NodeCollector(data_dir))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LiveState:
    """Where the collectors read the agent's state from; the agent fills in its parts."""

    def __init__(self) -> None:
        self.pods: Callable[[], Mapping[str, Any]] | None = None
        self.tunnel: Callable[[], tuple[bool, int]] | None = None


class _LiveCollector(Collector):
    def __init__(self, live: LiveState) -> None:
        self._live = live

    def collect(self) -> Iterator[Metric]:
        if self._live.pods is not None:
            phases = Tally(
                str(((pod.get("status") or {}).get("phase")) or "Pending")
                for pod in self._live.pods().values()
            )
            family = GaugeMetricFamily(
                "k3py_agent_pods", "Pods bound to this node, by phase.", labels=("phase",)
            )
            for phase in sorted(set(PHASES) | set(phases)):
                family.add_metric((phase,), phases.get(phase, 0))
            yield family
            yield GaugeMetricFamily(
                "kubelet_running_pods",
                "Number of pods that have a running pod sandbox",
                phases.get("Running", 0),
            )
        if self._live.tunnel is not None:
            connected, connections = self._live.tunnel()
            yield GaugeMetricFamily(
                "k3py_agent_tunnel_connected",
                "1 while the tunnel to the server is open.",
                1 if connected else 0,
            )
            yield CounterMetricFamily(
                "k3py_agent_tunnel_connections",
                "Tunnel connections made (the first and every reconnection).",
                connections,
            )
