"""An in-memory cluster for controller tests: the fake API, a virtual clock and hollow kubelets.

:class:`Cluster` runs chosen controllers (and the scheduler) against :class:`FakeApi` on a
:class:`FakeClock`. Nodes are plain Node objects with a Ready condition; :meth:`Cluster.kubelet`
plays every node's kubelet once: bound pods become Running and Ready with an IP, and pods
being deleted are removed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from k3py.cluster.client import EventRecorder, FakeClock, split_key
from k3py.cluster.client.fake import FakeApi
from k3py.cluster.server.controllers.base import (
    EVENTS,
    NODES,
    PODS,
    ControllerContext,
    ControlPlaneSettings,
    QueueController,
    SharedInformers,
)
from k3py.cluster.server.scheduler import Scheduler
from k3py.shutdown import cancel_and_wait

Object = dict[str, Any]


def node(
    name: str,
    *,
    ready: str = "True",
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    labels: dict[str, str] | None = None,
    taints: list[Object] | None = None,
) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
            "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    }


def template(image: str = "nginx:1", labels: dict[str, str] | None = None, **spec: Any) -> Object:
    return {
        "metadata": {"labels": labels or {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": image}], **spec},
    }


class Cluster:
    def __init__(self, settings: ControlPlaneSettings | None = None) -> None:
        self.clock = FakeClock()
        self.api = FakeApi(self.clock)
        self.settings = settings or ControlPlaneSettings(leader_elect=False)
        self.informers = SharedInformers(self.api, self.clock)
        self.recorder = EventRecorder(self.api, self.clock, "test")
        self.ctx = ControllerContext(
            self.api, self.informers, self.clock, self.recorder, self.settings
        )
        self.scheduler: Scheduler | None = None
        self._loops: list[QueueController] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ips = itertools.count(2)

    def add(self, *controllers: type[QueueController]) -> list[QueueController]:
        made = [cls(self.ctx) for cls in controllers]
        self._loops.extend(made)
        return made

    def with_scheduler(self) -> Scheduler:
        self.scheduler = Scheduler(
            self.api,
            self.informers.get(PODS),
            self.informers.get(NODES),
            self.recorder,
            self.clock,
        )
        return self.scheduler

    async def start(self) -> None:
        self.informers.start()
        runs = [c.run() for c in self._loops] + [self.recorder.run()]
        if self.scheduler is not None:
            runs.append(self.scheduler.run())
        self._tasks = [asyncio.create_task(r) for r in runs]
        await self.settle()

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.informers.stop()

    async def settle(self, seconds: float = 0.5) -> None:
        """Let every loop run to quiet, moving virtual time a little for short retries."""
        for _ in range(int(seconds / 0.1)):
            await self.clock.advance(0.1)

    # -- objects ------------------------------------------------------------------------------

    async def create(self, obj: Object) -> Object:
        from k3py.cluster.client.fake import info_of

        info = info_of(obj["apiVersion"], obj["kind"])
        return await self.api.create(info, obj, obj["metadata"].get("namespace"))

    def objects(self, api_version: str, kind: str) -> list[Object]:
        from k3py.cluster.client.fake import info_of

        return self.api.objects(info_of(api_version, kind))

    def pods(self, **labels: str) -> list[Object]:
        return [
            p
            for p in self.api.objects(PODS)
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    def events(self, reason: str) -> list[Object]:
        return [e for e in self.api.objects(EVENTS) if e["reason"] == reason]

    async def kubelet(self, *, only: Iterable[str] | None = None, ready: bool = True) -> None:
        """Each node's kubelet, once: run bound pods, finish pods being deleted."""
        wanted = set(only) if only is not None else None
        for pod in self.api.objects(PODS):
            spec = pod.get("spec") or {}
            node_name = spec.get("nodeName")
            if not node_name or (wanted is not None and node_name not in wanted):
                continue
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            if pod["metadata"].get("deletionTimestamp"):
                await self.api.delete(PODS, name, ns, grace_period_seconds=0)
                continue
            status = pod.get("status") or {}
            if status.get("phase") in ("Running", "Succeeded", "Failed"):
                continue
            await self.set_pod_status(pod, "Running", ready=ready)
        await self.settle()

    async def set_pod_status(self, pod: Object, phase: str, *, ready: bool = True) -> None:
        stamp = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "phase": phase,
            "podIP": (pod.get("status") or {}).get("podIP") or f"10.42.0.{next(self._ips)}",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready and phase == "Running" else "False",
                    "lastTransitionTime": stamp,
                },
            ],  # fmt: skip
        }
        if phase in ("Succeeded", "Failed"):
            status["containerStatuses"] = [
                {
                    "name": "app",
                    "state": {
                        "terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                       "finishedAt": stamp}
                    },
                }
            ]  # fmt: skip
        ns, name = split_key(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
        await self.api.patch(PODS, name, {"status": status}, ns, subresource="status")
