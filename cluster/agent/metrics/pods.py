"""Pod start latency: a pod host that notices when each pod first runs.

Wraps what pod workers report through (:class:`k3py.cluster.agent.podsync.worker.PodHost`):
the first time a pod is heard of starts its clock, the first status with phase Running stops
it into ``kubelet_pod_start_duration_seconds``, as the kubelet measures from first seeing a pod
to the pod running. A pod the agent adopted already running (after a restart) is not counted.
"""

from __future__ import annotations

import time
from typing import Any

from k3py.cluster.agent.podsync.spec import ObjectSource, Pod
from k3py.cluster.agent.podsync.worker import PodHost
from k3py.cluster.api.metricseries import Histogram

# Pods whose start is being timed are few at any moment; this bound only stops a pathological
# stream of never-starting pods from growing the map.
MAX_TRACKED = 4096


def _uid(pod: Pod) -> str:
    return str((pod.get("metadata") or {}).get("uid", ""))


class StartTimedHost:
    def __init__(self, inner: PodHost, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram
        self._first_seen: dict[str, float] = {}
        self._started: set[str] = set()

    @property
    def objects(self) -> ObjectSource:
        return self._inner.objects

    def _seen(self, pod: Pod) -> None:
        uid = _uid(pod)
        if uid and uid not in self._started and uid not in self._first_seen:
            if len(self._first_seen) >= MAX_TRACKED:
                self._first_seen.clear()
            self._first_seen[uid] = time.monotonic()

    def event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        self._seen(pod)
        self._inner.event(pod, kind, reason, message)

    async def report_status(self, pod: Pod, status: dict[str, Any]) -> None:
        uid = _uid(pod)
        if status.get("phase") == "Running" and uid not in self._started:
            first = self._first_seen.pop(uid, None)
            self._started.add(uid)
            if first is not None:
                self._histogram.observe((), time.monotonic() - first)
        else:
            self._seen(pod)
        await self._inner.report_status(pod, status)

    async def finish_deletion(self, pod: Pod) -> None:
        uid = _uid(pod)
        self._first_seen.pop(uid, None)
        self._started.discard(uid)
        await self._inner.finish_deletion(pod)
