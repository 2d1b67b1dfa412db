"""The SQLite datastore's single writer thread, with group commit.

All writes go through one thread that owns the write connection. It takes every write queued
while the previous transaction was committing and applies them in one transaction, so many
concurrent writers share one WAL append (and, with ``synchronous=FULL``, one fsync) instead of
paying one each. Compaction runs on the same thread in small steps between write batches, so it
never holds the write lock for long; so does the incremental vacuum that follows it and returns
the pages compaction freed to the file system, so the file shrinks with the live data. Results
go back to the event loop in one callback per transaction, after COMMIT returns: a write is
acknowledged only once it is durable. Going the other way, the writes submitted during one turn
of the event loop reach the thread as one queue item: each wake-up of the thread costs the loop
a GIL hand-over, which a profile at 1,000 creates/s showed as the largest cost of a create.

With ``synchronous=NORMAL`` a COMMIT in WAL mode appends to the WAL and does not wait for the
disk, so when the thread has nothing queued and holds no transaction, the loop commits the
turn's writes itself (``inline``): a batch of small writes takes well under a millisecond, while
the hand-over to the thread and back cost more than that under load, because every statement
the thread runs releases the GIL and then waits for the busy loop to give it back. The
connection lock decides who writes; a batch the loop cannot commit at once goes to the thread as
before, and so does everything after it until the thread has caught up, so revisions stay in
submission order. The loop must never wait for the disk: the write connection does not
checkpoint the WAL by itself in this mode, the thread runs passive checkpoints (the fsyncs)
over its own connection, which does not hold up writers. ``synchronous=FULL`` syncs the WAL at
every COMMIT and keeps every write on the thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3py.cluster.server.store import sqlite_log
from k3py.cluster.server.store.model import Event, KeyValue, StoreError

logger = logging.getLogger(__name__)

MAX_BATCH = 512
COMPACT_STEP = 1000  # revisions per compaction transaction
# Free pages (4 KiB each) returned per step, between write batches, and how many may stay.
VACUUM_STEP_PAGES = 2048
VACUUM_MIN_FREE_PAGES = 256
# Inline commits: the thread checkpoints the WAL at most this often, when there were writes (at
# 1,000 writes/s that is about as often as SQLite's own 1,000-page automatic checkpoint).
CHECKPOINT_SECONDS = 0.25


@dataclass(slots=True)
class WriteOp:
    kind: sqlite_log.WriteKind
    key: str
    value: bytes
    expected_revision: int
    future: asyncio.Future[KeyValue]


@dataclass(slots=True)
class CompactOp:
    target: int
    future: asyncio.Future[int]


class _Stop:
    pass


# A future of the event loop and what to resolve it with (a result or an exception).
Outcome = tuple["asyncio.Future[Any]", object]


@dataclass(slots=True)
class Committed:
    """What one transaction did, handed to the event loop."""

    revision: int
    compact_revision: int
    events: list[Event] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class GroupCommitWriter:
    """Owns the write connection on a dedicated thread; see the module docstring."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        state: sqlite_log.LogState,
        deliver: Callable[[Committed], None],
        *,
        inline: Callable[[Committed], None] | None = None,
    ) -> None:
        self._conn = conn
        self._path = path
        self._deliver = deliver
        # Inline mode: how the loop hands itself a commit's results (None: thread only).
        self._deliver_inline = inline
        # Held by whoever runs a transaction on the write connection (the thread or the loop).
        self._conn_lock = threading.Lock()
        # Queue items handed to the thread, and those it has finished (the loop commits inline
        # only when both agree: nothing of an earlier turn is still waiting for the thread).
        self._handed = 0
        self._finished = 0
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpointed_writes = 0
        self._checkpointed_at = 0.0
        if inline is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        self._revision = state.current_revision
        self._compact_revision = state.compact_revision
        self._compact_goal = state.compact_revision
        self._compact_waiters: list[asyncio.Future[int]] = []
        # After compaction, free pages go back to the file system a step at a time.
        self._vacuuming = True
        self._queue: queue.SimpleQueue[list[WriteOp | CompactOp | _Stop]] = queue.SimpleQueue()
        # Submitted during this turn of the event loop, not yet handed to the thread.
        self._pending: list[WriteOp | CompactOp | _Stop] = []
        self._in_flight: list[WriteOp] = []
        # Guards `failure` against a submit racing with the thread's last clean-up.
        self._failure_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="k3py-store-writer", daemon=True)
        self.failure: BaseException | None = None
        self.writes = 0
        self.transactions = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: WriteOp | CompactOp) -> None:
        """Queue ``op`` (on the event loop's thread); handed over at the end of this loop turn."""
        with self._failure_lock:
            if self.failure is not None:
                raise StoreError(f"the datastore writer stopped: {self.failure}; restart k3py")
        self._pending.append(op)
        if len(self._pending) == 1:
            op.future.get_loop().call_soon(self._hand_over)

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._commit_inline(batch):
            return
        with self._failure_lock:
            if self.failure is None:
                self._handed += 1
                self._queue.put(batch)
                return
            error = StoreError(f"the datastore writer stopped: {self.failure}; restart k3py")
        for op in batch:
            if not isinstance(op, _Stop) and not op.future.done():
                op.future.set_exception(error)

    def _commit_inline(self, batch: list[WriteOp | CompactOp | _Stop]) -> bool:
        """Commit ``batch`` on the loop's thread if it may (see the module docstring)."""
        if self._deliver_inline is None or self._handed != self._finished or self.failure:
            return False
        if not all(isinstance(op, WriteOp) for op in batch):
            return False
        if not self._conn_lock.acquire(blocking=False):
            return False
        writes = [op for op in batch if isinstance(op, WriteOp)]
        try:
            for start in range(0, len(writes), MAX_BATCH):
                self._commit_writes(writes[start : start + MAX_BATCH], self._deliver_inline)
        except Exception as error:  # a fault of ours: the writes fail, the server goes on
            logger.exception("datastore write failed unexpectedly")
            self._rollback()
            failed = StoreError(f"writing to {self._path} failed: {error}")
            for op in writes:
                if not op.future.done():
                    op.future.set_exception(failed)
        finally:
            self._conn_lock.release()
        return True

    def stop(self) -> None:
        """Commit what is queued, then end the thread (join with :meth:`join`)."""
        self._pending.append(_Stop())
        self._hand_over()

    def join(self) -> None:
        self._thread.join()

    # The thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                compacting = self._compact_goal > self._compact_revision or self._vacuuming
                writes = self._in_flight = []
                taken = self._take(block=not compacting)
                with self._conn_lock:
                    for op in (op for items in taken for op in items):
                        if isinstance(op, WriteOp):
                            writes.append(op)
                        elif isinstance(op, CompactOp):
                            goal = min(op.target, self._revision)
                            self._compact_goal = max(self._compact_goal, goal)
                            self._compact_waiters.append(op.future)
                        else:
                            stopping = True
                    for start in range(0, len(writes), MAX_BATCH):
                        self._commit_writes(writes[start : start + MAX_BATCH], self._deliver)
                    if self._compact_goal > self._compact_revision and not stopping:
                        self._compact_step()
                    elif self._vacuuming and not stopping:
                        self._vacuum_step()
                    if self._compact_waiters and self._compact_goal <= self._compact_revision:
                        self._finish_compaction()
                    self._finished += len(taken)
                if self._deliver_inline is not None:
                    self._checkpoint()
            self._finish_compaction()
        except BaseException as error:  # the thread must never die silently
            logger.exception("datastore writer stopped unexpectedly")
            with self._failure_lock:
                self.failure = error
            self._fail_queued(StoreError(f"the datastore writer stopped: {error}; restart k3py"))
        finally:
            if self._checkpoint_conn is not None:
                self._checkpoint_conn.close()

    def _take(self, *, block: bool) -> list[list[WriteOp | CompactOp | _Stop]]:
        """Every queue item now; with ``block``, wait for one first (inline mode: a while)."""
        items: list[list[WriteOp | CompactOp | _Stop]] = []
        if block:
            if self._deliver_inline is None:
                items.append(self._queue.get())
            else:  # wake up now and then to checkpoint what the loop committed
                try:
                    items.append(self._queue.get(timeout=CHECKPOINT_SECONDS))
                except queue.Empty:
                    return items
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _checkpoint(self) -> None:
        """Copy the WAL into the database over the thread's own connection (inline mode)."""
        now = time.monotonic()
        if self.writes == self._checkpointed_writes or now - self._checkpointed_at < (
            CHECKPOINT_SECONDS
        ):
            return
        self._checkpointed_writes, self._checkpointed_at = self.writes, now
        try:
            if self._checkpoint_conn is None:
                self._checkpoint_conn = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False
                )
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as error:
            logger.warning(
                "checkpointing the datastore's WAL failed",
                extra={"fields": {"path": str(self._path), "error": str(error)}},
            )

    def _commit_writes(self, ops: list[WriteOp], deliver: Callable[[Committed], None]) -> None:
        done = Committed(self._revision, self._compact_revision)
        revision = self._revision
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                try:
                    event = sqlite_log.apply_write(
                        self._conn, op.kind, op.key, op.value, op.expected_revision, revision + 1
                    )
                except StoreError as refused:  # KeyExists, NotFound, Conflict: nothing written
                    done.outcomes.append((op.future, refused))
                    continue
                revision += 1
                done.events.append(event)
                done.outcomes.append((op.future, event.kv))
            self._conn.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            logger.error(
                "datastore write failed",
                extra={"fields": {"path": str(self._path), "error": str(error)}},
            )
            failed = StoreError(
                f"writing to {self._path} failed: {error}; check the disk (space, permissions)"
            )
            done = Committed(self._revision, self._compact_revision)
            done.outcomes = [(op.future, failed) for op in ops]
        else:
            self._revision = revision
            done.revision = revision
            if done.events:
                self.writes += len(done.events)
                self.transactions += 1
        deliver(done)

    def _compact_step(self) -> None:
        upto = min(self._compact_goal, self._compact_revision + COMPACT_STEP)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            sqlite_log.compact_step(self._conn, self._compact_revision, upto)
            self._conn.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            self._compact_goal = self._compact_revision
            failed = StoreError(f"compacting {self._path} failed: {error}")
            done = Committed(self._revision, self._compact_revision)
            done.outcomes = [(waiter, failed) for waiter in self._compact_waiters]
            self._compact_waiters = []
            self._deliver(done)
            return
        self._compact_revision = upto
        self._vacuuming = True
        self._deliver(Committed(self._revision, upto))

    def _vacuum_step(self) -> None:
        """Give back up to VACUUM_STEP_PAGES free pages; stop once few are left."""
        try:
            if sqlite_log.free_pages(self._conn) < VACUUM_MIN_FREE_PAGES:
                self._vacuuming = False
                return
            sqlite_log.vacuum_step(self._conn, VACUUM_STEP_PAGES)
        except sqlite3.Error as error:
            self._rollback()
            self._vacuuming = False
            logger.warning(
                "returning free datastore pages failed",
                extra={"fields": {"path": str(self._path), "error": str(error)}},
            )

    def _finish_compaction(self) -> None:
        if not self._compact_waiters:
            return
        done = Committed(self._revision, self._compact_revision)
        done.outcomes = [(waiter, self._compact_revision) for waiter in self._compact_waiters]
        self._compact_waiters = []
        self._deliver(done)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("datastore rollback failed")

    def _fail_queued(self, error: StoreError) -> None:
        done = Committed(self._revision, self._compact_revision)
        done.outcomes = [(waiter, error) for waiter in self._compact_waiters]
        done.outcomes += [(op.future, error) for op in self._in_flight]
        for items in self._take(block=False):
            for op in items:
                if not isinstance(op, _Stop):
                    done.outcomes.append((op.future, error))
        self._deliver(done)
