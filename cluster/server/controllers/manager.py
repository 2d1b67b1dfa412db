"""Running the control plane: leader election, shared informers, the scheduler and controllers.

:func:`run_control_plane` is what ``k3py server`` starts next to the API server, with a
loopback :class:`KubeClient` holding the admin credential. It waits to lead (when election is
on), builds the enabled controllers over one set of informers, and runs them until ``stop`` is
set. If leadership is lost it stops everything and goes back to waiting; if a loop crashes the
crash is logged and the whole set is rebuilt after a pause, so caches never drift from what
the loops believe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from k3py.cluster.client import Clock, EventRecorder, KubeApi, RealClock, wait_event
from k3py.cluster.server.controllers.base import (
    NODES,
    PODS,
    ControllerContext,
    ControlPlaneSettings,
    QueueController,
    SharedInformers,
)
from k3py.cluster.server.controllers.cronjob import CronJobController
from k3py.cluster.server.controllers.daemonset import DaemonSetController
from k3py.cluster.server.controllers.deployment import DeploymentController
from k3py.cluster.server.controllers.disruption import DisruptionController
from k3py.cluster.server.controllers.endpoints import EndpointsController
from k3py.cluster.server.controllers.garbage import GarbageCollector
from k3py.cluster.server.controllers.job import JobController
from k3py.cluster.server.controllers.leader import ElectionConfig, LeaderElector
from k3py.cluster.server.controllers.nodelifecycle import NodeLifecycleController
from k3py.cluster.server.controllers.replicaset import ReplicaSetController
from k3py.cluster.server.controllers.servicelb import ServiceLBController
from k3py.cluster.server.controllers.updateplan import UpdatePlanController
from k3py.cluster.server.metrics.observer import ControlPlaneObserver, NullObserver
from k3py.cluster.server.scheduler import Scheduler
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.controllers")

CONTROLLERS: dict[str, type[QueueController]] = {
    "deployment": DeploymentController,
    "replicaset": ReplicaSetController,
    "daemonset": DaemonSetController,
    "job": JobController,
    "cronjob": CronJobController,
    "disruption": DisruptionController,
    "endpoints": EndpointsController,
    "nodelifecycle": NodeLifecycleController,
    "garbagecollector": GarbageCollector,
    "servicelb": ServiceLBController,
    "updateplan": UpdatePlanController,
}
RESTART_PAUSE = 2.0


class ControlPlane:
    """One generation of informers, controllers and scheduler (rebuilt after a loss)."""

    def __init__(
        self,
        api: KubeApi,
        settings: ControlPlaneSettings,
        clock: Clock,
        observer: ControlPlaneObserver | None = None,
    ) -> None:
        observer = observer or NullObserver()
        self.informers = SharedInformers(api, clock)
        self.recorder = EventRecorder(api, clock, "k3py-controller-manager", settings.identity)
        self.ctx = ControllerContext(api, self.informers, clock, self.recorder, settings, observer)
        self.controllers = [
            cls(self.ctx) for name, cls in CONTROLLERS.items() if settings.enabled(name)
        ]
        self.scheduler: Scheduler | None = None
        self.scheduler_recorder: EventRecorder | None = None
        if settings.enabled("scheduler"):
            self.scheduler_recorder = EventRecorder(
                api, clock, settings.scheduler.name, settings.identity
            )
            self.scheduler = Scheduler(
                api,
                self.informers.get(PODS),
                self.informers.get(NODES),
                self.scheduler_recorder,
                clock,
                settings.scheduler,
                observer=observer,
            )
        observer.queues(self.queue_depths)
        observer.informers(self.informers.synced)

    def queue_depths(self) -> list[tuple[str, int]]:
        depths = [(c.name, len(c.queue)) for c in self.controllers]
        if self.scheduler is not None:
            depths.append(("scheduler", len(self.scheduler.queue)))
        return depths

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        loops: list[Coroutine[Any, Any, None]] = [self.recorder.run()]
        loops.extend(c.run() for c in self.controllers)
        if self.scheduler is not None and self.scheduler_recorder is not None:
            loops.extend([self.scheduler.run(), self.scheduler_recorder.run()])
        return loops


async def _run_until(
    loops: list[Coroutine[Any, Any, None]], *until: asyncio.Event
) -> asyncio.Task[None] | None:
    """Run ``loops`` until one of ``until`` is set or a loop ends; return a loop that ended."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    waiters = [asyncio.create_task(event.wait()) for event in until]
    try:
        done, _ = await asyncio.wait([*tasks, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        # A loop that ended by itself is the caller's to report; the rest are stopped here.
        await cancel_and_wait(*(t for t in [*tasks, *waiters] if not t.done()), log=logger)
    ended = [t for t in tasks if t in done]
    return ended[0] if ended else None


async def _keep_lease(elector: LeaderElector, stop: asyncio.Event, lost: asyncio.Event) -> None:
    await elector.hold(stop)
    if not stop.is_set():
        lost.set()


async def run_control_plane(
    client: KubeApi,
    settings: ControlPlaneSettings,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    observer: ControlPlaneObserver | None = None,
) -> None:
    """Lead (if elected), then run the scheduler and controllers until ``stop`` is set."""
    clock = clock or RealClock()
    observer = observer or NullObserver()
    elector = LeaderElector(
        client,
        clock,
        ElectionConfig(
            settings.lease_namespace,
            settings.lease_name,
            settings.identity,
            settings.lease_duration,
            settings.renew_deadline,
            settings.retry_period,
        ),
    )
    while not stop.is_set():
        if settings.leader_elect and not await elector.acquire(stop):
            return
        observer.leader(True)
        plane = ControlPlane(client, settings, clock, observer)
        plane.informers.start()
        lost = asyncio.Event()
        loops = plane.loops()
        if settings.leader_elect:
            loops.append(_keep_lease(elector, stop, lost))
        logger.info(
            "control plane running",
            extra={"fields": {"controllers": ",".join(c.name for c in plane.controllers)}},
        )
        try:
            ended = await _run_until(loops, stop, lost)
        finally:
            await plane.informers.stop()
            observer.leader(False)
        if stop.is_set():
            break
        if ended is not None and not lost.is_set():
            error = None if ended.cancelled() else ended.exception()
            logger.error("a control loop stopped; restarting the control plane", exc_info=error)
        await wait_event(clock, stop, RESTART_PAUSE)
    if settings.leader_elect:
        await elector.release()
