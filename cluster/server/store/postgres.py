"""The PostgreSQL datastore: one revisioned log shared by several servers, watches pushed by NOTIFY.

Each server keeps three kinds of connection: a writer (one task with group commit: every write
queued while the previous batch was committing goes to the database in one statement, see
:data:`postgres_sql.WRITE_FUNCTION`), a small pool for reads, and a listener. Writers of all
servers serialise inside the database, so revisions commit in order. A commit notifies every
server's listener; the server then reads the new rows of the log and publishes them to its
in-process :class:`WatchHub`, so a watch on one server sees writes made on another without
polling. A slow poll of the current revision covers notifications lost while the listener was
reconnecting. A server publishes its own writes to its hub (after any rows of other servers
before them) before it acknowledges them, as the SQLite datastore does. Compaction runs on
whichever server holds an advisory lock, one at a time. When the database cannot be reached,
operations fail with :class:`Unavailable` (503 with Retry-After at the API) and the server
reconnects by itself. asyncpg is imported only here, so servers on SQLite never load it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from k3py.cluster.server.store import postgres_sql as sql
from k3py.cluster.server.store.compaction import (
    Clock,
    Retention,
    RetentionTracker,
    run_compaction_loop,
)
from k3py.cluster.server.store.endpoint import redact_endpoint
from k3py.cluster.server.store.model import (
    Compacted,
    Conflict,
    Event,
    KeyExists,
    KeyValue,
    ListResult,
    NotFound,
    StoreError,
    StoreStats,
    Unavailable,
)
from k3py.cluster.server.store.watch import DEFAULT_MAX_PENDING, HubWatch, WatchHub
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger(__name__)

MAX_BATCH = 512
CATCH_UP_CHUNK = 1000
COMPACT_STEP = 1000
_NO_LIMIT = 1 << 62


@dataclass(slots=True)
class _WriteOp:
    kind: str
    key: str
    value: bytes
    expected_revision: int
    future: asyncio.Future[KeyValue]


class PostgresDatastore:
    """A :class:`~k3py.cluster.server.store.model.Datastore` in a PostgreSQL database."""

    # Several servers may use the database at once (they then keep Leases of their own).
    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        retention: Retention | None = None,
        max_watch_pending: int = DEFAULT_MAX_PENDING,
        readers: int = 4,
        poll_interval: float = 2.0,
        timeout: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.dsn = dsn
        self.endpoint = redact_endpoint(dsn)
        self._retention = retention or Retention()
        self._tracker = RetentionTracker(self._retention, clock)
        self._readers = readers
        self._poll_interval = poll_interval
        self._timeout = timeout
        self._hub = WatchHub(self._replay, max_pending=max_watch_pending)
        self._pg: Any = None  # the asyncpg module, imported at start
        self._down: tuple[type[BaseException], ...] = ()
        self._pool: Any = None
        self._writer_conn: Any = None
        self._listener: Any = None
        self._queue: asyncio.Queue[_WriteOp] = asyncio.Queue()
        self._publish_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._compact_revision = 0
        self._started = False
        self._closed = False
        self.writes = 0
        self.transactions = 0

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise StoreError("the datastore was already started")
        self._started = True
        import asyncpg

        self._pg = asyncpg
        exc = asyncpg.exceptions
        self._down = (
            OSError,
            asyncio.TimeoutError,
            asyncpg.InterfaceError,
            exc.PostgresConnectionError,
            exc.OperatorInterventionError,
            exc.InsufficientResourcesError,
            # A connection left mid-protocol by a timeout or a dropped socket.
            exc.InternalClientError,
        )
        try:
            conn = await self._connect()
        except self._down as error:
            raise StoreError(
                f"cannot connect to the datastore {self.endpoint}: {error or type(error).__name__};"
                " check that PostgreSQL runs there and the endpoint's user, password and database"
            ) from None
        except asyncpg.PostgresError as error:
            raise StoreError(f"the datastore {self.endpoint} refused k3py: {error}") from None
        try:
            await self._create_schema(conn)
            # Listen before reading the state: nothing committed after it goes unnoticed.
            await self._ensure_listener()
            cur, comp = await conn.fetchrow(sql.STATE)
        except BaseException as error:
            await conn.close()
            await self._drop_listener()
            if isinstance(error, asyncpg.PostgresError):
                raise StoreError(
                    f"the datastore {self.endpoint} refused k3py: {error}; the endpoint's user"
                    " must own the database (CREATE DATABASE k3py OWNER <user>)"
                ) from None
            raise
        self._writer_conn = conn
        self._hub.published_revision = cur
        self._compact_revision = comp
        self._tracker.record(cur)
        self._pool = asyncpg.create_pool(
            self.dsn, min_size=0, max_size=self._readers, timeout=self._timeout
        )
        await self._pool
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="k3py-store-writer"),
            asyncio.create_task(self._follow_loop(), name="k3py-store-follower"),
            asyncio.create_task(
                run_compaction_loop(self.compact, self._retention.interval_seconds),
                name="k3py-store-compaction",
            ),
        ]
        logger.info(
            "datastore ready",
            extra={
                "fields": {"endpoint": self.endpoint, "revision": cur, "compact_revision": comp}
            },
        )

    async def _connect(self) -> Any:
        return await self._pg.connect(self.dsn, timeout=self._timeout)

    async def _create_schema(self, conn: Any) -> None:
        database = await conn.fetchval("SELECT current_database()")
        # One server at a time checks and creates, so two first starts do not race.
        await conn.execute("SELECT pg_advisory_lock($1)", sql.SCHEMA_LOCK)
        try:
            tables = [row[0] for row in await conn.fetch(sql.TABLES)]
            version = None
            if "k3py_meta" in tables:
                version = await conn.fetchval(
                    "SELECT value FROM k3py_meta WHERE name = 'schema_version'"
                )
            sql.check_schema(tables, version, database)
            if version != sql.SCHEMA_VERSION:
                async with conn.transaction():
                    await conn.execute(sql.SCHEMA)
                    await conn.execute(sql.WRITE_FUNCTION)
                    await conn.execute(
                        "INSERT INTO k3py_meta (name, value) VALUES ('schema_version', $1)"
                        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        sql.SCHEMA_VERSION,
                    )
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", sql.SCHEMA_LOCK)

    async def close(self) -> None:
        """Stop background work, fail queued writes, end every watch, close the connections."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            await cancel_and_wait(task)
        while not self._queue.empty():
            op = self._queue.get_nowait()
            if not op.future.done():
                op.future.set_exception(StoreError("the datastore is closing"))
        self._hub.close()
        for conn in (self._writer_conn, self._listener):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2.0)
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 2.0)

    # State ----------------------------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        return self._hub.published_revision

    @property
    def compact_revision(self) -> int:
        return self._compact_revision

    @property
    def stats(self) -> StoreStats:
        return StoreStats(writes=self.writes, transactions=self.transactions)

    @property
    def watcher_count(self) -> int:
        return self._hub.watcher_count

    def _unavailable(self, error: BaseException) -> Unavailable:
        return Unavailable(
            f"the datastore {self.endpoint} cannot be reached"
            f" ({error or type(error).__name__}); retry shortly"
        )

    # Reads ----------------------------------------------------------------------------------

    async def _fetch(self, query: str, *args: object) -> builtins.list[Any]:
        if self._pool is None or self._closed:
            raise StoreError("the datastore is not running (not started, or closed)")
        try:
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(query, *args, timeout=self._timeout))
        except self._down as error:
            raise self._unavailable(error) from None

    def _note_state(self, compacted: int) -> None:
        self._compact_revision = max(self._compact_revision, compacted)

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        (row,) = await self._fetch(sql.GET, revision, key)
        self._note_state(row["comp"])
        sql.checked_revision(revision, row["cur"], row["comp"])
        if row["id"] is None or row["deleted"]:
            return None
        return KeyValue(key, bytes(row["value"]), row["create_revision"], row["id"])

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        bounded, bounds = sql.prefix_args(prefix)
        rows = await self._fetch(
            sql.list_sql(bounded), revision, start_after, limit + 1 if limit > 0 else 0, *bounds
        )
        cur, comp = rows[0]["cur"], rows[0]["comp"]
        self._note_state(comp)
        at = sql.checked_revision(revision, cur, comp)
        items = [
            KeyValue(row["name"], bytes(row["value"]), row["create_revision"], row["id"])
            for row in rows
            if row["id"] is not None
        ]
        more = limit > 0 and len(items) > limit
        return ListResult(items=items[:limit] if more else items, revision=at, more=more)

    async def count(self, prefix: str) -> int:
        bounded, bounds = sql.prefix_args(prefix)
        (row,) = await self._fetch(sql.count_sql(bounded), *bounds)
        return int(row[0])

    async def _events(
        self, prefix: str, after: int, upto: int, limit: int
    ) -> tuple[builtins.list[Event], int]:
        """Events ``after < revision <= upto`` and the current revision of the same snapshot."""
        bounded, bounds = sql.prefix_args(prefix)
        rows = await self._fetch(sql.events_sql(bounded), after, upto, limit, *bounds)
        cur, comp = rows[0]["cur"], rows[0]["comp"]
        self._note_state(comp)
        if after < comp:
            raise Compacted(after, compact_revision=comp, current_revision=cur)
        return [sql.event_of(row) for row in rows if row["id"] is not None], cur

    async def _replay(self, prefix: str, after: int, upto: int, limit: int) -> builtins.list[Event]:
        events, _ = await self._events(prefix, after, upto, limit)
        return events

    # Writes ---------------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self._write("create", key, value, 0)

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> KeyValue:
        return await self._write("update", key, value, expected_revision)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        return await self._write("delete", key, b"", expected_revision)

    async def _write(self, kind: str, key: str, value: bytes, expected: int) -> KeyValue:
        if not self._tasks or self._closed:
            raise StoreError("the datastore is not running (not started, or closed)")
        future: asyncio.Future[KeyValue] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_WriteOp(kind, key, value, expected, future))
        return await future

    async def _write_loop(self) -> None:
        while True:
            ops = [await self._queue.get()]
            while len(ops) < MAX_BATCH and not self._queue.empty():
                ops.append(self._queue.get_nowait())
            try:
                await self._commit(ops)
            except asyncio.CancelledError:
                for op in ops:
                    if not op.future.done():
                        op.future.set_exception(StoreError("the datastore is closing"))
                raise
            except Exception as error:  # never let the writer die: fail this batch only
                logger.exception("datastore write failed")
                for op in ops:
                    if not op.future.done():
                        op.future.set_exception(StoreError(f"the datastore write failed: {error}"))

    async def _commit(self, ops: builtins.list[_WriteOp]) -> None:
        try:
            if self._writer_conn is None or self._writer_conn.is_closed():
                self._writer_conn = await self._connect()
            rows = await self._writer_conn.fetch(
                sql.WRITE,
                [op.kind for op in ops],
                [op.key for op in ops],
                [op.value for op in ops],
                [op.expected_revision for op in ops],
                timeout=self._timeout,
            )
        except Exception as error:
            # The outcome is unknown (the commit may or may not have happened): nothing is
            # acknowledged, the connection is replaced, and the client retries.
            conn, self._writer_conn = self._writer_conn, None
            if conn is not None:
                conn.terminate()
            failed: StoreError = self._unavailable(error)
            if isinstance(error, self._pg.PostgresError) and not isinstance(error, self._down):
                logger.error("datastore write failed", extra={"fields": {"error": str(error)}})
                failed = StoreError(f"the datastore refused the write: {error}")
            for op in ops:
                if not op.future.done():
                    op.future.set_exception(failed)
            return
        events: builtins.list[Event] = []
        outcomes: builtins.list[KeyValue | StoreError] = []
        for op, row in zip(ops, rows, strict=True):
            outcome = _outcome(op, row)
            outcomes.append(outcome if isinstance(outcome, StoreError) else outcome.kv)
            if isinstance(outcome, Event):
                events.append(outcome)
        if events:
            self.writes += len(events)
            self.transactions += 1
            await self._publish_own(events)
        for op, result in zip(ops, outcomes, strict=True):
            if op.future.done():
                continue  # the caller was cancelled; the write still happened
            if isinstance(result, StoreError):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)

    # Watch: publishing the log to this server's hub -----------------------------------------

    async def _publish_own(self, events: builtins.list[Event]) -> None:
        """Publish this server's committed batch, after any earlier rows of other servers."""
        async with self._publish_lock:
            if self._hub.published_revision < events[0].kv.mod_revision - 1:
                with contextlib.suppress(StoreError):  # the follower will catch up later
                    await self._catch_up_locked()
            fresh = [e for e in events if e.kv.mod_revision > self._hub.published_revision]
            if fresh and self._hub.published_revision >= fresh[0].kv.mod_revision - 1:
                self._hub.publish(fresh)
            elif fresh:
                # Earlier rows could not be read: leave everything to the follower, so that
                # watchers still see revisions in order.
                self._wake.set()

    async def _catch_up_locked(self) -> None:
        while True:
            after = self._hub.published_revision
            events, cur = await self._events("", after, _NO_LIMIT, CATCH_UP_CHUNK)
            if events:
                self._hub.publish(events)
            if len(events) < CATCH_UP_CHUNK:
                # Every row up to `cur` has been read (compaction may have removed some).
                self._hub.published_revision = max(self._hub.published_revision, cur)
                return

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            if int(payload) <= self._hub.published_revision:
                return  # this server's own write, already published
        self._wake.set()

    async def _follow_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()
            try:
                await self._ensure_listener()
                async with self._publish_lock:
                    await self._catch_up_locked()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, (StoreError, *self._down)):
                    logger.debug(
                        "datastore follower waiting", extra={"fields": {"error": str(error)}}
                    )
                else:
                    logger.exception("datastore follower failed; retrying")
                await self._drop_listener()

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._drop_listener()
        conn = await self._connect()
        await conn.add_listener(sql.CHANNEL, self._on_notify)
        self._listener = conn
        # Notifications sent while there was no listener are gone: the caller catches up next.

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            conn.terminate()

    def watch(self, prefix: str, *, revision: int) -> HubWatch:
        if not self._tasks or self._closed:
            raise StoreError("the datastore is not running (not started, or closed)")
        if revision < 0:
            raise ValueError(f"revision must be >= 0, got {revision}")
        if revision == 0:
            return self._hub.watch(prefix, self._hub.published_revision)
        if revision < self._compact_revision:
            raise Compacted(
                revision,
                compact_revision=self._compact_revision,
                current_revision=self._hub.published_revision,
            )
        return self._hub.watch(prefix, revision)

    # Compaction -----------------------------------------------------------------------------

    async def compact(self) -> int:
        """Compact as far as the retention rule allows, unless another server is compacting."""
        target = self._tracker.target(self._hub.published_revision)
        if target <= self._compact_revision or self._pool is None:
            return self._compact_revision
        try:
            async with self._pool.acquire() as conn:
                while True:
                    async with conn.transaction():
                        if not await conn.fetchval(
                            "SELECT pg_try_advisory_xact_lock($1)", sql.COMPACT_LOCK
                        ):
                            break  # another server is compacting this database now
                        done = await conn.fetchval(
                            "SELECT value FROM k3py_meta WHERE name = 'compact_revision'"
                        )
                        self._note_state(done)
                        if done >= target:
                            break
                        upto = min(target, done + COMPACT_STEP)
                        for statement in sql.COMPACT_STEP:
                            await conn.execute(statement, done, upto)
                        await conn.execute(sql.SET_COMPACT, upto)
                    self._note_state(upto)
        except self._down as error:
            raise self._unavailable(error) from None
        return self._compact_revision


def _outcome(op: _WriteOp, row: Any) -> Event | StoreError:
    status, revision, create_revision, prev_revision, old = row
    old_value = bytes(old) if old is not None else b""
    if status == "ok":
        if op.kind == "create":
            return Event("create", KeyValue(op.key, op.value, revision, revision), None)
        prev = KeyValue(op.key, old_value, create_revision, prev_revision)
        if op.kind == "update":
            return Event("update", KeyValue(op.key, op.value, create_revision, revision), prev)
        return Event("delete", KeyValue(op.key, old_value, create_revision, revision), prev)
    if status == "missing":
        return NotFound(op.key)
    current = KeyValue(op.key, old_value, create_revision, revision)
    if status == "exists":
        return KeyExists(op.key, current=current)
    return Conflict(op.key, expected_revision=op.expected_revision, current=current)
