"""An in-memory datastore with the same semantics as the SQLite one, for tests of other code.

It keeps each key's history as a list of (revision, value or tombstone) and the event log for
watch replay, shares the watch hub and the retention rule with the SQLite datastore, and raises
the same errors, so code tested against it behaves the same on disk. Nothing is persisted.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import time

from k3py.cluster.server.store.compaction import (
    Clock,
    Retention,
    RetentionTracker,
    run_compaction_loop,
)
from k3py.cluster.server.store.model import (
    Compacted,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    KeyExists,
    KeyValue,
    ListResult,
    NotFound,
    StoreError,
    StoreStats,
)
from k3py.cluster.server.store.watch import DEFAULT_MAX_PENDING, HubWatch, WatchHub
from k3py.shutdown import cancel_and_wait

# One step of a key's history: the revision and the value from then on (None: deleted).
_Version = tuple[int, KeyValue | None]


class MemoryDatastore:
    """A :class:`~k3py.cluster.server.store.model.Datastore` held in process memory.

    Usable without :meth:`start` (which only adds the background compaction loop).
    """

    def __init__(
        self,
        *,
        retention: Retention | None = None,
        max_watch_pending: int = DEFAULT_MAX_PENDING,
        clock: Clock = time.monotonic,
    ) -> None:
        self._retention = retention or Retention()
        self._tracker = RetentionTracker(self._retention, clock)
        self._hub = WatchHub(self._replay, max_pending=max_watch_pending)
        self._history: dict[str, builtins.list[_Version]] = {}
        self._events: builtins.list[Event] = []  # every event after the compact revision
        self._revision = 0
        self._compact = 0
        self._writes = 0
        self._compaction_task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._tracker.record(self._revision)
        self._compaction_task = asyncio.create_task(
            run_compaction_loop(self.compact, self._retention.interval_seconds),
            name="k3py-store-compaction",
        )

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._compaction_task)
        self._hub.close()

    @property
    def current_revision(self) -> int:
        return self._revision

    @property
    def compact_revision(self) -> int:
        return self._compact

    @property
    def stats(self) -> StoreStats:
        return StoreStats(writes=self._writes, transactions=self._writes)

    @property
    def watcher_count(self) -> int:
        return self._hub.watcher_count

    # Reads ----------------------------------------------------------------------------------

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        self._check_open()
        return self._at(key, self._check_revision(revision))

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        self._check_open()
        at = self._check_revision(revision)
        items: builtins.list[KeyValue] = []
        for key in sorted(k for k in self._history if k.startswith(prefix) and k > start_after):
            kv = self._at(key, at)
            if kv is None:
                continue
            if limit > 0 and len(items) == limit:
                return ListResult(items=items, revision=at, more=True)
            items.append(kv)
        return ListResult(items=items, revision=at, more=False)

    async def count(self, prefix: str) -> int:
        self._check_open()
        return sum(
            1
            for key, versions in self._history.items()
            if key.startswith(prefix) and versions[-1][1]
        )

    def _at(self, key: str, revision: int) -> KeyValue | None:
        versions = self._history.get(key, [])
        index = bisect.bisect_right(versions, revision, key=lambda version: version[0])
        return versions[index - 1][1] if index else None

    def _check_revision(self, revision: int) -> int:
        if revision == 0:
            return self._revision
        if revision < self._compact:
            raise Compacted(
                revision, compact_revision=self._compact, current_revision=self._revision
            )
        if revision > self._revision:
            raise FutureRevision(revision, current_revision=self._revision)
        return revision

    # Writes ---------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        self._check_open()
        current = self._at(key, self._revision)
        if current is not None:
            raise KeyExists(key, current=current)
        revision = self._revision + 1
        return self._append("create", KeyValue(key, value, revision, revision), None)

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> KeyValue:
        current = self._current(key, expected_revision)
        kv = KeyValue(key, value, current.create_revision, self._revision + 1)
        return self._append("update", kv, current)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        current = self._current(key, expected_revision)
        kv = KeyValue(key, current.value, current.create_revision, self._revision + 1)
        return self._append("delete", kv, current)

    def _current(self, key: str, expected_revision: int) -> KeyValue:
        self._check_open()
        current = self._at(key, self._revision)
        if current is None:
            raise NotFound(key)
        if expected_revision and expected_revision != current.mod_revision:
            raise Conflict(key, expected_revision=expected_revision, current=current)
        return current

    def _append(self, kind: EventType, kv: KeyValue, prev: KeyValue | None) -> KeyValue:
        self._revision = kv.mod_revision
        self._writes += 1
        self._history.setdefault(kv.key, []).append(
            (kv.mod_revision, None if kind == "delete" else kv)
        )
        event = Event(kind, kv, prev)
        self._events.append(event)
        self._hub.publish([event])
        return kv

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the datastore is closed")

    # Watch and compaction -------------------------------------------------------------------

    def watch(self, prefix: str, *, revision: int) -> HubWatch:
        self._check_open()
        if revision < 0:
            raise ValueError(f"revision must be >= 0, got {revision}")
        if revision == 0:
            return self._hub.watch(prefix, self._revision)
        if revision < self._compact:
            raise Compacted(
                revision, compact_revision=self._compact, current_revision=self._revision
            )
        return self._hub.watch(prefix, revision)

    async def _replay(self, prefix: str, after: int, upto: int, limit: int) -> builtins.list[Event]:
        if after < self._compact:
            raise Compacted(after, compact_revision=self._compact, current_revision=self._revision)
        revisions = [event.kv.mod_revision for event in self._events]
        start = bisect.bisect_right(revisions, after)
        found: builtins.list[Event] = []
        for event in self._events[start:]:
            if event.kv.mod_revision > upto or len(found) == limit:
                break
            if event.kv.key.startswith(prefix):
                found.append(event)
        return found

    async def compact(self) -> int:
        target = self._tracker.target(self._revision)
        if target <= self._compact:
            return self._compact
        for key in builtins.list(self._history):
            versions = self._history[key]
            keep_from = bisect.bisect_right(versions, target, key=lambda version: version[0]) - 1
            if keep_from < 0:
                continue
            if versions[keep_from][1] is None:  # deleted at or before target: forget the key
                keep_from += 1
            del versions[:keep_from]
            if not versions:
                del self._history[key]
        revisions = [event.kv.mod_revision for event in self._events]
        del self._events[: bisect.bisect_right(revisions, target)]
        self._compact = target
        return target
