"""Datastore timings: a :class:`Datastore` that times every call of the one it wraps.

The API's object store reads and writes through this wrapper, so ``etcd_request_duration_seconds
{operation,type}`` (the name kube-apiserver uses for its etcd calls, with ``type`` the resource
of the key, ``/registry/pods/…`` → ``pods``) covers exactly what requests cost the datastore,
on SQLite and PostgreSQL alike, without the backends knowing about metrics. Lifecycle calls
(start, close) and watches pass straight through.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from k3py.cluster.server.store import Datastore, KeyValue, ListResult, Watch

if TYPE_CHECKING:
    from k3py.cluster.server.metrics.apiserver import ServerMetrics


def key_type(key: str) -> str:
    """The resource a storage key belongs to: ``/registry/apps/deployments/ns/x`` → deployments."""
    parts = key.split("/", 4)
    if len(parts) < 3 or parts[1] != "registry":
        return "other"
    # Group-qualified keys carry the group first; groups have dots or are "apps"/"batch".
    if len(parts) >= 4 and ("." in parts[2] or parts[2] in ("apps", "batch")):
        return parts[3] or "other"
    return parts[2] or "other"


class TimedDatastore:
    """Delegates to ``inner``; records latency and failures per operation and resource."""

    def __init__(self, inner: Datastore, metrics: ServerMetrics) -> None:
        self.inner = inner
        self._histogram = metrics.storage
        self._errors = metrics.storage_errors

    def _done(self, operation: str, key: str, started: float, failed: bool) -> None:
        labels = (operation, key_type(key))
        self._histogram.observe(labels, time.perf_counter() - started)
        if failed:
            self._errors.inc(labels)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def current_revision(self) -> int:
        return self.inner.current_revision

    @property
    def compact_revision(self) -> int:
        return self.inner.compact_revision

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        started, failed = time.perf_counter(), True
        try:
            result = await self.inner.get(key, revision=revision)
            failed = False
            return result
        finally:
            self._done("get", key, started, failed)

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        started, failed = time.perf_counter(), True
        try:
            result = await self.inner.list(
                prefix, revision=revision, start_after=start_after, limit=limit
            )
            failed = False
            return result
        finally:
            self._done("list", prefix, started, failed)

    async def count(self, prefix: str) -> int:
        started, failed = time.perf_counter(), True
        try:
            result = await self.inner.count(prefix)
            failed = False
            return result
        finally:
            self._done("count", prefix, started, failed)

    async def create(self, key: str, value: bytes) -> KeyValue:
        started, failed = time.perf_counter(), True
        try:
            result = await self.inner.create(key, value)
            failed = False
            return result
        finally:
            self._done("create", key, started, failed)

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> KeyValue:
        started, failed = time.perf_counter(), True
        try:
            result = await self.inner.update(key, value, expected_revision=expected_revision)
            failed = False
            return result
        finally:
            self._done("update", key, started, failed)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        started, failed = time.perf_counter(), True
        try:
            result = await self.inner.delete(key, expected_revision=expected_revision)
            failed = False
            return result
        finally:
            self._done("delete", key, started, failed)

    def watch(self, prefix: str, *, revision: int) -> Watch:
        return self.inner.watch(prefix, revision=revision)

    async def compact(self) -> int:
        started = time.perf_counter()
        try:
            return await self.inner.compact()
        finally:
            self._done("compact", "/registry/", started, False)


__all__ = ["TimedDatastore", "key_type"]
