"""The embedded SQLite datastore: WAL mode, one writer thread, a small reader pool, watches.

Writes go to :class:`GroupCommitWriter`, which commits them on its thread or, with
``synchronous=NORMAL`` and nothing queued there, on the event loop's (a COMMIT then only appends
to the WAL); their futures resolve when the transaction commits. Reads run on a small thread
pool, each in one read transaction so a list and its revision agree. The reads asked for during
one turn of the event loop go to the pool together and come back in one callback: every
hand-over between the loop and a thread costs a GIL round trip, which a profile at 1,000
creates/s put first among a create's costs. Committed events are published to the in-process
:class:`WatchHub` before the writes are acknowledged, so a client that sees its write succeed can
rely on its watchers having it queued. An exclusive lock file next to the database keeps a second
server off the same file.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from k3py.cluster.server.store import integrity, sqlite_log
from k3py.cluster.server.store.compaction import (
    Clock,
    Retention,
    RetentionTracker,
    run_compaction_loop,
)
from k3py.cluster.server.store.model import (
    Compacted,
    Event,
    KeyValue,
    ListResult,
    StoreError,
    StoreStats,
)
from k3py.cluster.server.store.sqlite_writer import (
    Committed,
    CompactOp,
    GroupCommitWriter,
    WriteOp,
)
from k3py.cluster.server.store.watch import DEFAULT_MAX_PENDING, HubWatch, WatchHub
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger(__name__)
T = TypeVar("T")
# A read waiting for the pool, and what it gave (a result or an exception) for its future.
_PendingRead = tuple[
    Callable[[sqlite3.Connection, sqlite_log.LogState], Any], "asyncio.Future[Any]"
]
_ReadOutcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _resolve(outcomes: list[_ReadOutcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the reader gave up (cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SQLiteDatastore:
    """A :class:`~k3py.cluster.server.store.model.Datastore` in one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        sync: sqlite_log.SyncMode = "normal",
        retention: Retention | None = None,
        max_watch_pending: int = DEFAULT_MAX_PENDING,
        readers: int = 2,
        clock: Clock = time.monotonic,
        cluster_existed: bool = False,
        reset: bool = False,
    ) -> None:
        self.path = path
        # Whether the cluster's PKI predates this start (a missing database is then a loss),
        # and whether the operator asked to start anew anyway (--cluster-reset).
        self._cluster_existed = cluster_existed
        self._reset = reset
        self.sync = sync
        self._retention = retention or Retention()
        self._tracker = RetentionTracker(self._retention, clock)
        self._readers = readers
        self._hub = WatchHub(self._replay, max_pending=max_watch_pending)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: GroupCommitWriter | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_executor: ThreadPoolExecutor | None = None
        # Reads asked for during this turn of the event loop, not yet handed to the pool.
        self._pending_reads: builtins.list[_PendingRead] = []
        self._lock_file: IO[bytes] | None = None
        self._compaction_task: asyncio.Task[None] | None = None
        self._current_revision = 0
        self._compact_revision = 0
        self._closed = False

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            raise StoreError("the datastore was already started")
        self._loop = asyncio.get_running_loop()
        state = await asyncio.to_thread(self._open)
        self._current_revision = state.current_revision
        self._compact_revision = state.compact_revision
        self._hub.published_revision = state.current_revision
        self._tracker.record(state.current_revision)
        assert self._write_conn is not None
        self._writer = GroupCommitWriter(
            self._write_conn,
            self.path,
            state,
            self._deliver,
            inline=self._on_committed if self.sync == "normal" else None,
        )
        self._writer.start()
        self._read_executor = ThreadPoolExecutor(self._readers, "k3py-store-read")
        self._compaction_task = asyncio.create_task(
            run_compaction_loop(self.compact, self._retention.interval_seconds),
            name="k3py-store-compaction",
        )
        logger.info(
            "datastore ready",
            extra={
                "fields": {
                    "path": str(self.path),
                    "sync": self.sync,
                    "revision": state.current_revision,
                    "compact_revision": state.compact_revision,
                }
            },
        )

    def _open(self) -> sqlite_log.LogState:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_file = open(self.path.with_name(self.path.name + ".lock"), "wb")  # noqa: SIM115
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise StoreError(
                f"{self.path} is in use by another k3py server; stop it or use another --data-dir"
            ) from None
        self._lock_file = lock_file
        try:
            integrity.check_present(
                self.path, cluster_existed=self._cluster_existed, reset=self._reset
            )
            # Create the file private before SQLite opens it: SQLite gives its -wal and -shm
            # files the database's mode, and Secrets live in there.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
            self._write_conn = sqlite_log.connect(self.path, self.sync)
            if integrity.quick_check(self._write_conn, self.path):
                integrity.save_last_good(self._write_conn, self.path)
            state = sqlite_log.create_schema(self._write_conn, self.path)
            for _ in range(self._readers):
                conn = sqlite_log.connect(self.path, self.sync)
                self._read_conns.append(conn)
                self._read_pool.put(conn)
        except StoreError:
            self._close_connections()
            raise
        except (sqlite3.Error, OSError) as error:
            self._close_connections()
            raise integrity.open_failure(self.path, error) from error
        return state

    async def close(self) -> None:
        """Commit queued writes, end every watch, stop background work and close the file."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._compaction_task)
        self._hub.close()
        if self._writer is not None:
            self._writer.stop()
            await asyncio.to_thread(self._writer.join)
            await asyncio.sleep(0)  # let the writer's last deliveries resolve their futures
        if self._read_executor is not None:
            await asyncio.to_thread(self._read_executor.shutdown)
        await asyncio.to_thread(self._close_connections)

    def _close_connections(self) -> None:
        # Readers first: the last connection to close checkpoints the WAL into the database.
        for conn in self._read_conns:
            conn.close()
        self._read_conns.clear()
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # State ----------------------------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        return self._current_revision

    @property
    def compact_revision(self) -> int:
        return self._compact_revision

    @property
    def stats(self) -> StoreStats:
        writer = self._writer
        if writer is None:
            return StoreStats(writes=0, transactions=0)
        return StoreStats(writes=writer.writes, transactions=writer.transactions)

    @property
    def watcher_count(self) -> int:
        return self._hub.watcher_count

    # Reads ----------------------------------------------------------------------------------

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        return await self._read(lambda conn, state: sqlite_log.get(conn, state, key, revision))

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        return await self._read(
            lambda conn, state: sqlite_log.list_keys(
                conn, state, prefix, revision, start_after, limit
            )
        )

    async def count(self, prefix: str) -> int:
        return await self._read(lambda conn, _: sqlite_log.count_keys(conn, prefix))

    async def _read(self, read: Callable[[sqlite3.Connection, sqlite_log.LogState], T]) -> T:
        if self._read_executor is None or self._closed:
            raise StoreError("the datastore is not running (not started, or closed)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending_reads.append((read, future))
        if len(self._pending_reads) == 1:
            loop.call_soon(self._hand_over_reads)
        return await future

    def _hand_over_reads(self) -> None:
        batch, self._pending_reads = self._pending_reads, []
        try:
            if self._read_executor is None:
                raise RuntimeError("no read pool")
            self._read_executor.submit(self._read_batch, batch)
        except RuntimeError:  # the pool was shut down: the datastore closed meanwhile
            error = StoreError("the datastore is not running (not started, or closed)")
            _resolve([(future, None, error) for _, future in batch])

    def _read_batch(self, batch: builtins.list[_PendingRead]) -> None:
        """On a pool thread: every read of the batch, each in its own read transaction."""
        outcomes: builtins.list[_ReadOutcome] = []
        conn = self._read_pool.get()
        try:
            for read, future in batch:
                try:
                    outcomes.append((future, sqlite_log.in_snapshot(conn, read), None))
                except sqlite3.Error as error:
                    failed = StoreError(f"reading {self.path} failed: {error}")
                    outcomes.append((future, None, failed))
                except Exception as error:  # handed to the caller, as the executor would
                    outcomes.append((future, None, error))
        finally:
            self._read_pool.put(conn)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(_resolve, outcomes)

    # Writes ---------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self._write(WriteOp("create", key, value, 0, self._future()))

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> KeyValue:
        return await self._write(WriteOp("update", key, value, expected_revision, self._future()))

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        return await self._write(WriteOp("delete", key, b"", expected_revision, self._future()))

    def _future(self) -> asyncio.Future[Any]:
        if self._writer is None or self._closed:
            raise StoreError("the datastore is not running (not started, or closed)")
        return asyncio.get_running_loop().create_future()

    async def _write(self, op: WriteOp) -> KeyValue:
        assert self._writer is not None
        self._writer.submit(op)
        return await op.future

    def _deliver(self, done: Committed) -> None:
        """Called on the writer thread: hand a commit's results to the event loop."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._on_committed, done)

    def _on_committed(self, done: Committed) -> None:
        self._current_revision = max(self._current_revision, done.revision)
        self._compact_revision = max(self._compact_revision, done.compact_revision)
        self._hub.publish(done.events)
        for future, outcome in done.outcomes:
            if future.done():
                continue  # the caller was cancelled; the write still happened
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    # Watch and compaction -------------------------------------------------------------------

    def watch(self, prefix: str, *, revision: int) -> HubWatch:
        if self._writer is None or self._closed:
            raise StoreError("the datastore is not running (not started, or closed)")
        if revision < 0:
            raise ValueError(f"revision must be >= 0, got {revision}")
        if revision == 0:
            return self._hub.watch(prefix, self._hub.published_revision)
        if revision < self._compact_revision:
            raise Compacted(
                revision,
                compact_revision=self._compact_revision,
                current_revision=self._current_revision,
            )
        return self._hub.watch(prefix, revision)

    async def _replay(self, prefix: str, after: int, upto: int, limit: int) -> builtins.list[Event]:
        return await self._read(
            lambda conn, state: sqlite_log.events(conn, state, prefix, after, upto, limit)
        )

    async def compact(self) -> int:
        """Compact as far as the retention rule allows now; returns the compact revision."""
        target = self._tracker.target(self._current_revision)
        if target <= self._compact_revision:
            return self._compact_revision
        future: asyncio.Future[int] = self._future()
        assert self._writer is not None
        self._writer.submit(CompactOp(target, future))
        return await future
