"""The agent's metrics registry, under the kubelet's metric names where it has one.

:class:`AgentMetrics` owns one :class:`k3py.cluster.api.metricseries.Registry` per agent (tests
run several agents in one process; prometheus_client is loaded only when the server first asks
for the agent's metrics). Counters and histograms are fed by :mod:`.runtime` and :mod:`.pods`;
the rest (pods by phase, the tunnel's state, the node's CPU, memory, disk and network) is read
at scrape time from the agent's live objects, so nothing is copied on every change.
:meth:`AgentMetrics.exposition` is what ``/api/v1/nodes/NAME/proxy/metrics`` returns.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from k3py.cluster.agent.metrics.nodestats import node_families
from k3py.cluster.api.metricseries import Registry, counter_family, gauge_family, labelled_gauge

RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POD_START_BUCKETS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 60.0, 120.0)
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


class AgentMetrics:
    def __init__(self, data_dir: Path) -> None:
        registry = self.registry = Registry()
        operation = ("operation_type",)
        self.runtime_operations = registry.counter(
            "kubelet_runtime_operations_total",
            "Cumulative number of runtime operations by operation type.",
            operation,
        )
        self.runtime_errors = registry.counter(
            "kubelet_runtime_operations_errors_total",
            "Cumulative number of runtime operation errors by operation type.",
            operation,
        )
        self.runtime_durations = registry.histogram(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            operation,
            RUNTIME_BUCKETS,
        )
        self.starts = registry.counter(
            "kubelet_started_containers_total",
            "Cumulative number of containers started",
            ("container_type",),
        )
        self.start_errors = registry.counter(
            "kubelet_started_containers_errors_total",
            "Cumulative number of errors when starting containers",
            ("container_type",),
        )
        self.restarts = registry.counter(
            "k3py_agent_container_restarts_total",
            "Containers started again after their previous instance ended.",
        )
        self.images_loaded = registry.counter(
            "k3py_agent_images_loaded_total", "Images loaded from air-gap archives."
        )
        self.pod_start = registry.histogram(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod"
            " starting to run",
            (),
            POD_START_BUCKETS,
        )
        self.live = LiveState()
        registry.register(lambda: _live_families(self.live))
        registry.register(lambda: node_families(data_dir))

    def exposition(self) -> bytes:
        return self.registry.exposition()


class LiveState:
    """Where the collectors read the agent's state from; the agent fills in its parts."""

    def __init__(self) -> None:
        self.pods: Callable[[], Mapping[str, Any]] | None = None
        self.tunnel: Callable[[], tuple[bool, int]] | None = None


def _live_families(live: LiveState) -> Iterable[Any]:
    if live.pods is not None:
        phases = Tally(
            str(((pod.get("status") or {}).get("phase")) or "Pending")
            for pod in live.pods().values()
        )
        family = labelled_gauge("k3py_agent_pods", "Pods bound to this node, by phase.", ("phase",))
        for phase in sorted(set(PHASES) | set(phases)):
            family.add_metric((phase,), phases.get(phase, 0))
        yield family
        yield gauge_family(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            phases.get("Running", 0),
        )
    if live.tunnel is not None:
        connected, connections = live.tunnel()
        yield gauge_family(
            "k3py_agent_tunnel_connected",
            "1 while the tunnel to the server is open.",
            1 if connected else 0,
        )
        yield counter_family(
            "k3py_agent_tunnel_connections",
            "Tunnel connections made (the first and every reconnection).",
            connections,
        )
