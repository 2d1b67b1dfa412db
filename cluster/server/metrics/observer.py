"""What the control plane tells its observer: scheduling attempts, reconcile errors, leadership.

The scheduler, the controllers and the leader elector report through this small protocol so
that they stay free of the metrics library; :class:`NullObserver` is what they use when nobody
listens (tests, tools), and :class:`k3py.cluster.server.metrics.ControlPlaneMetrics` is the
Prometheus implementation ``k3py server`` passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol


class ControlPlaneObserver(Protocol):
    def schedule_attempt(self, result: str, seconds: float) -> None:
        """One scheduling decision: ``scheduled``, ``unschedulable`` or ``error``."""

    def reconcile_error(self, controller: str) -> None:
        """A controller's reconcile failed and its key goes back on the queue."""

    def leader(self, leading: bool) -> None:
        """This process started or stopped leading the control plane."""

    def queues(self, depths: Callable[[], Sequence[tuple[str, int]]]) -> None:
        """Where to read each controller's work queue depth from (the current generation)."""

    def informers(self, synced: Callable[[], bool]) -> None:
        """Where to read whether the current generation's informers have synced."""


class NullObserver:
    """An observer that records nothing."""

    def schedule_attempt(self, result: str, seconds: float) -> None:
        pass

    def reconcile_error(self, controller: str) -> None:
        pass

    def leader(self, leading: bool) -> None:
        pass

    def queues(self, depths: Callable[[], Sequence[tuple[str, int]]]) -> None:
        pass

    def informers(self, synced: Callable[[], bool]) -> None:
        pass
