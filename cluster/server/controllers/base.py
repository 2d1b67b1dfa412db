"""What every controller shares: settings, shared informers, and the queue-driven worker loop.

:class:`SharedInformers` keeps one informer per resource for the whole control plane, with
the indexes several controllers use (pods by owner, by node). A :class:`QueueController` turns
informer events into keys on its work queue and runs workers that call ``reconcile(key)``;
a reconcile reads the caches, writes what differs, and may ask to be called again after a
delay (a pending deadline). Failures are logged and retried with back-off; a 409 Conflict is
retried at once, since it only means the cache was a step behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import (
    ClientError,
    Clock,
    Informer,
    KubeApi,
    ShutDown,
    WorkQueue,
    object_key,
)
from k3py.cluster.client.events import EventRecorder
from k3py.cluster.server.metrics.observer import ControlPlaneObserver, NullObserver
from k3py.cluster.server.scheduler import SchedulerSettings
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.controllers")

Object = dict[str, Any]


def _info(api_version: str, kind: str) -> ResourceInfo:
    info = by_kind(api_version, kind)
    assert info is not None, kind
    return info


PODS = _info("v1", "Pod")
NODES = _info("v1", "Node")
SERVICES = _info("v1", "Service")
ENDPOINTS = _info("v1", "Endpoints")
NAMESPACES = _info("v1", "Namespace")
DEPLOYMENTS = _info("apps/v1", "Deployment")
REPLICASETS = _info("apps/v1", "ReplicaSet")
DAEMONSETS = _info("apps/v1", "DaemonSet")
CONTROLLER_REVISIONS = _info("apps/v1", "ControllerRevision")
JOBS = _info("batch/v1", "Job")
LEASES = _info("coordination.k8s.io/v1", "Lease")
EVENTS = _info("v1", "Event")

# Pod events reach the owner's queue this much later, so that a burst of them is one pass.
POD_EVENT_DELAY = 0.05

ALL_CONTROLLERS = (
    "scheduler",
    "deployment",
    "replicaset",
    "daemonset",
    "job",
    "cronjob",
    "disruption",
    "endpoints",
    "nodelifecycle",
    "garbagecollector",
    "servicelb",
    "updateplan",
)


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


@dataclass(frozen=True)
class ControlPlaneSettings:
    cluster_cidr: str = "10.42.0.0/16"
    node_cidr_mask_size: int = 24
    service_cidr: str = "10.43.0.0/16"
    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 40.0
    node_startup_grace_period: float = 60.0
    job_backoff_base: float = 10.0
    job_backoff_max: float = 360.0
    disabled: frozenset[str] = frozenset()
    workers: int = 2
    leader_elect: bool = True
    lease_name: str = "k3py-control-plane"
    lease_namespace: str = "kube-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = field(default_factory=default_identity)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)

    def enabled(self, name: str) -> bool:
        return name not in self.disabled


def _owner_uids(obj: Object) -> list[str]:
    return [
        str(ref.get("uid"))
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
        if ref.get("controller")
    ]


class SharedInformers:
    def __init__(self, api: KubeApi, clock: Clock) -> None:
        self.api = api
        self.clock = clock
        self._informers: dict[ResourceInfo, Informer] = {}

    def get(self, info: ResourceInfo) -> Informer:
        informer = self._informers.get(info)
        if informer is None:
            informer = Informer(self.api, info, clock=self.clock)
            informer.add_index("owner", _owner_uids)
            if info is PODS:
                informer.add_index("node", lambda p: [(p.get("spec") or {}).get("nodeName") or ""])
            self._informers[info] = informer
        return informer

    def start(self) -> None:
        for informer in self._informers.values():
            informer.start()

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self._informers.values()))

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self._informers.values())

    async def stop(self) -> None:
        for informer in self._informers.values():
            await informer.stop()


@dataclass
class ControllerContext:
    api: KubeApi
    informers: SharedInformers
    clock: Clock
    recorder: EventRecorder
    settings: ControlPlaneSettings
    observer: ControlPlaneObserver = field(default_factory=NullObserver)


class QueueController:
    """A reconcile loop over keys (``namespace/name``) of its primary kind."""

    name = "controller"
    component = "k3py-controller-manager"  # the Events' source, as kube-controller-manager names it

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.clock = ctx.clock
        self.recorder = ctx.recorder
        self.queue: WorkQueue[str] = WorkQueue(ctx.clock)

    def event(self, obj: Object, event_type: str, reason: str, message: str) -> None:
        self.recorder.event(obj, event_type, reason, message, self.component)

    def enqueue(self, obj: Object) -> None:
        self.queue.add(object_key(obj))

    def enqueue_owner(self, obj: Object, kind: str, *, delay: float = 0.0) -> None:
        """Queue the controller that owns ``obj`` if it is a ``kind`` (``delay`` s from now)."""
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == kind:
                namespace = (obj.get("metadata") or {}).get("namespace")
                key = f"{namespace}/{ref['name']}" if namespace else str(ref["name"])
                self.queue.add_after(key, delay)

    async def reconcile(self, key: str) -> float | None:
        """Make the world match ``key``'s object; return seconds until a re-check, if any."""
        raise NotImplementedError

    async def run(self) -> None:
        await self.ctx.informers.wait_synced()
        workers = [
            asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(max(1, self.ctx.settings.workers))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            await cancel_and_wait(*workers)
            await self.queue.shut_down()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                again = await self.reconcile(key)
            except ApiError as err:
                if err.code == 409:
                    self.queue.add_after(key, 0.05)
                else:
                    self._failed(key, err)
            except ClientError as err:
                self._failed(key, err)
            except Exception as err:
                logger.exception("reconcile crashed", extra={"fields": {"key": key}})
                self._failed(key, err, log=False)
            else:
                self.queue.forget(key)
                if again is not None:
                    self.queue.add_after(key, again)
            finally:
                self.queue.done(key)

    def _failed(self, key: str, err: Exception, *, log: bool = True) -> None:
        delay = self.queue.retry(key)
        self.ctx.observer.reconcile_error(self.name)
        if log:
            logger.warning(
                "reconcile failed; retrying",
                extra={
                    "fields": {
                        "controller": self.name,
                        "key": key,
                        "error": str(err),
                        "retry_in": f"{delay:.2f}s",
                    }
                },
            )
