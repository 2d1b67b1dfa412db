"""The control plane's metrics under kube-scheduler's and kube-controller-manager's names.

:class:`ControlPlaneMetrics` implements :class:`.observer.ControlPlaneObserver` on the server's
registry: ``scheduler_schedule_attempts_total{result,profile}`` and
``scheduler_scheduling_attempt_duration_seconds``, ``workqueue_depth{name}`` (read from the
live controllers at scrape time), ``k3py_controller_reconcile_errors_total{controller}`` and
``leader_election_master_status{name}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from k3py.cluster.api.metricseries import Registry, labelled_gauge

SCHEDULING_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
PROFILE = "default-scheduler"
LEASE_NAME = "k3py-controller-manager"


class ControlPlaneMetrics:
    def __init__(self, registry: Registry) -> None:
        self._attempts = registry.counter(
            "scheduler_schedule_attempts_total",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod"
            " could not be scheduled, while 'error' means an internal scheduler problem.",
            ("result", "profile"),
        )
        self._latency = registry.histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding).",
            ("result", "profile"),
            SCHEDULING_BUCKETS,
        )
        self._errors = registry.counter(
            "k3py_controller_reconcile_errors_total",
            "Reconciles that failed and were queued again, per controller.",
            ("controller",),
        )
        self._leader = registry.gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates"
            " backup, 1 indicates master. 'name' is the string used to identify the lease.",
            ("name",),
        )
        self._leader.set((LEASE_NAME,), 0)
        self._depths: Callable[[], Sequence[tuple[str, int]]] | None = None
        self._synced: Callable[[], bool] | None = None
        self._leading = False
        registry.register(self._queue_families)

    def schedule_attempt(self, result: str, seconds: float) -> None:
        self._attempts.inc((result, PROFILE))
        self._latency.observe((result, PROFILE), seconds)

    def reconcile_error(self, controller: str) -> None:
        self._errors.inc((controller,))

    def leader(self, leading: bool) -> None:
        self._leading = leading
        self._leader.set((LEASE_NAME,), 1 if leading else 0)

    def queues(self, depths: Callable[[], Sequence[tuple[str, int]]]) -> None:
        self._depths = depths

    def informers(self, synced: Callable[[], bool]) -> None:
        self._synced = synced

    async def informer_sync_check(self) -> str | None:
        """Readiness: the leading control plane's caches are filled (a standby has none)."""
        if not self._leading or self._synced is None or self._synced():
            return None
        return "the controllers' informers have not synced yet"

    def _queue_families(self) -> Iterable[Any]:
        if self._depths is None:
            return
        family = labelled_gauge("workqueue_depth", "Current depth of workqueue", ("name",))
        for name, depth in self._depths():
            family.add_metric((name,), depth)
        yield family
