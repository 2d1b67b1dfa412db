"""Recording core/v1 Events about objects, as client-go's event recorder does.

Controllers, the scheduler and the agent call :meth:`EventRecorder.event` and move on: the
events are written by one background task, so a slow API server never stalls a reconcile loop, and a
full backlog drops events (they are advisory) instead of growing memory. A repeat of the same
reason and message about the same object within ten minutes bumps the existing Event's
``count`` and ``lastTimestamp`` instead of creating another, which keeps ``kubectl describe``
readable when a pod stays unschedulable.

Like client-go's ``EventSourceObjectSpamFilter``, each source may say at most 25 things about
one object in a burst and then one more every five minutes: a ReplicaSet that creates a
thousand pods records 25 ``SuccessfulCreate`` Events, not a thousand writes competing with the
pods themselves for the API server (the rest are counted in ``dropped``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client.client import ClientError
from k3py.cluster.client.clock import Clock
from k3py.cluster.client.protocol import KubeApi

logger = logging.getLogger("k3py.client.events")

Object = dict[str, Any]
EVENTS = by_kind("v1", "Event")
BACKLOG = 1000
AGGREGATE_SECONDS = 600.0
_REMEMBERED = 4096
SPAM_BURST = 25  # client-go's defaultSpamBurst
SPAM_REFILL_SECONDS = 300.0  # defaultSpamQPS = 1/300: one more token every five minutes


class _Pending(NamedTuple):
    involved: Object
    event_type: str
    reason: str
    message: str
    component: str


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first: str
    at: float


def timestamp(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    def __init__(self, api: KubeApi, clock: Clock, component: str, instance: str = "") -> None:
        self.api = api
        self.clock = clock
        self.component = component
        self.instance = instance or component
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(BACKLOG)
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self.dropped = 0

    def _allowed(self, component: str, involved: Object) -> bool:
        """The spam filter: a token from the (source, object) bucket, if one is left."""
        key = (component, str(involved.get("uid") or involved.get("name")))
        now = self.clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(SPAM_BURST), now)
            while len(self._buckets) > _REMEMBERED:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            refill = (now - bucket.at) / SPAM_REFILL_SECONDS
            bucket.tokens = min(float(SPAM_BURST), bucket.tokens + refill)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def event(
        self, obj: Object, event_type: str, reason: str, message: str, component: str = ""
    ) -> None:
        """Queue an Event about ``obj`` (``Normal`` or ``Warning``), from ``component``."""
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        component = component or self.component
        if not self._allowed(component, involved):
            self.dropped += 1
            return
        try:
            pending = _Pending(involved, event_type, reason, message, component)
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            pending = await self._queue.get()
            try:
                await self._write(pending)
            except (ApiError, ClientError) as err:
                logger.debug("event not recorded", extra={"fields": {"error": str(err)}})

    async def flush(self) -> None:
        """Write everything queued now (tests, shutdown)."""
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            try:
                await self._write(pending)
            except (ApiError, ClientError) as err:
                logger.debug("event not recorded", extra={"fields": {"error": str(err)}})

    async def _write(self, p: _Pending) -> None:
        assert EVENTS is not None
        namespace = p.involved.get("namespace") or "default"
        key = (str(p.involved.get("uid") or p.involved["name"]), p.event_type, p.reason, p.message)
        now = timestamp(self.clock)
        seen = self._seen.get(key)
        if seen is not None and self.clock.monotonic() - seen.at < AGGREGATE_SECONDS:
            seen.count += 1
            seen.at = self.clock.monotonic()
            try:
                await self.api.patch(
                    EVENTS, seen.name, {"count": seen.count, "lastTimestamp": now}, seen.namespace
                )
                return
            except ApiError as err:
                if err.code != 404:
                    raise
        name = f"{p.involved['name']}.{time.time_ns():x}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": p.involved,
            "reason": p.reason,
            "message": p.message,
            "type": p.event_type,
            "source": {"component": p.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "eventTime": None,
            "reportingComponent": p.component,
            "reportingInstance": self.instance,
        }
        await self.api.create(EVENTS, event, namespace)
        self._seen[key] = _Seen(name, namespace, 1, now, self.clock.monotonic())
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
