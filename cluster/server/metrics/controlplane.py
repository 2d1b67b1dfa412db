"""The control plane's metrics under kube-scheduler's and kube-controller-manager's names.

:class:`ControlPlaneMetrics` implements :class:`.observer.ControlPlaneObserver` on the server's
registry: ``scheduler_schedule_attempts_total{result,profile}`` and
``scheduler_scheduling_attempt_duration_seconds``, ``workqueue_depth{name}`` (read from the
live controllers at scrape time), ``k3py_controller_reconcile_errors_total{controller}`` and
``leader_election_master_status{name}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

SCHEDULING_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
PROFILE = "default-scheduler"
LEASE_NAME = "k3py-controller-manager"


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._attempts = Counter(
            "scheduler_schedule_attempts_total",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod"
            " could not be scheduled, while 'error' means an internal scheduler problem.",
            ("result", "profile"),
            registry=registry,
        )
        self._latency = Histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding).",
            ("result", "profile"),
            buckets=SCHEDULING_BUCKETS,
            registry=registry,
        )
        self._errors = Counter(
            "k3py_controller_reconcile_errors_total",
            "Reconciles that failed and were queued again, per controller.",
            ("controller",),
            registry=registry,
        )
        self._leader = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates"
            " backup, 1 indicates master. 'name' is the string used to identify the lease.",
            ("name",),
            registry=registry,
        )
        self._leader.labels(LEASE_NAME).set(0)
        self._queues = _QueueCollector()
        registry.register(self._queues)

    def schedule_attempt(self, result: str, seconds: float) -> None:
        self._attempts.labels(result, PROFILE).inc()
        self._latency.labels(result, PROFILE).observe(seconds)

    def reconcile_error(self, controller: str) -> None:
        self._errors.labels(controller).inc()

    def leader(self, leading: bool) -> None:
        self._leader.labels(LEASE_NAME).set(1 if leading else 0)

    def queues(self, depths: Callable[[], Sequence[tuple[str, int]]]) -> None:
        self._queues.depths = depths


class _QueueCollector(Collector):
    def __init__(self) -> None:
        self.depths: Callable[[], Sequence[tuple[str, int]]] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.depths is None:
            return
        family = GaugeMetricFamily(
            "workqueue_depth", "Current depth of workqueue", labels=("name",)
        )
        for name, depth in self.depths():
            family.add_metric((name,), depth)
        yield family
