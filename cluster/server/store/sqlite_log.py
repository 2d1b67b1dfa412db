"""The SQL of the SQLite datastore: schema, snapshot reads, one write, one compaction step.

Everything here is synchronous and takes a :class:`sqlite3.Connection`; the datastore decides
which thread runs it. The table is kine's: every write is a new row whose ``id`` is the global
revision, ``prev_revision`` points at the key's previous row, and ``old_value`` keeps the value
that row replaced, so a watch replay needs no join. Deleting a key writes a tombstone row
(``deleted = 1``) carrying the last value. Compaction removes rows that a newer row of the same
key superseded at or before the compact revision, and tombstones at or before it, so every read
at a revision at or after the compact revision still sees the same state.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from k3py.cluster.server.store.model import (
    Compacted,
    Conflict,
    Event,
    FutureRevision,
    KeyExists,
    KeyValue,
    ListResult,
    NotFound,
    StoreError,
    prefix_upper_bound,
)

T = TypeVar("T")
logger = logging.getLogger("k3py.store")
SyncMode = Literal["normal", "full"]
WriteKind = Literal["create", "update", "delete"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    old_value BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE TABLE IF NOT EXISTS kine_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""
_COMPACT_KEY = "compact_revision"
_INCREMENTAL = 2  # PRAGMA auto_vacuum: 0 none, 1 full, 2 incremental
# Bound the WAL file after a burst, so an SD card does not keep a large file around.
_JOURNAL_SIZE_LIMIT = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogState:
    current_revision: int
    compact_revision: int


def connect(path: Path, sync: SyncMode) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with our pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (the WAL is written before COMMIT returns);
    # FULL also fsyncs the WAL at every commit, so it survives power loss.
    conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
    conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
    return conn


def create_schema(conn: sqlite3.Connection, path: Path) -> LogState:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer k3py (schema {version}, this one knows"
            f" {SCHEMA_VERSION}); upgrade k3py or restore a backup"
        )
    use_incremental_vacuum(conn, path)
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return read_state(conn)


def use_incremental_vacuum(conn: sqlite3.Connection, path: Path) -> None:
    """Make the file able to shrink: compaction frees pages, incremental vacuum returns them.

    A database without the mode is rewritten once by VACUUM (which also drops what compaction
    freed before); a new one is empty, so that costs nothing.
    """
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    if mode == _INCREMENTAL:
        return
    conn.execute(f"PRAGMA auto_vacuum={_INCREMENTAL}")
    (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if tables:
        logger.info(
            "rewriting the datastore once so that it can shrink",
            extra={"fields": {"path": str(path)}},
        )
    # In WAL mode the file already has its header, so even a new one needs VACUUM (instant
    # while it is empty) for the mode to take effect.
    conn.execute("VACUUM")


def free_pages(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("PRAGMA freelist_count").fetchone()
    return int(count)


def vacuum_step(conn: sqlite3.Connection, pages: int) -> None:
    """Return up to ``pages`` free pages to the file system (its own transaction)."""
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()


def read_state(conn: sqlite3.Connection) -> LogState:
    # sqlite_sequence remembers the largest id ever used, even if compaction removed that row,
    # so revisions stay monotonic across restarts.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()
    current = row[0] if row else 0
    row = conn.execute("SELECT value FROM kine_meta WHERE name = ?", (_COMPACT_KEY,)).fetchone()
    return LogState(current_revision=current, compact_revision=row[0] if row else 0)


def in_snapshot(conn: sqlite3.Connection, read: Callable[[sqlite3.Connection, LogState], T]) -> T:
    """Run ``read`` inside one read transaction, so it sees one consistent revision."""
    conn.execute("BEGIN")
    try:
        return read(conn, read_state(conn))
    finally:
        conn.execute("COMMIT")


def check_revision(revision: int, state: LogState) -> int:
    """The revision to read at (0 means current); raises for compacted or future revisions."""
    if revision == 0:
        return state.current_revision
    if revision < state.compact_revision:
        raise Compacted(
            revision,
            compact_revision=state.compact_revision,
            current_revision=state.current_revision,
        )
    if revision > state.current_revision:
        raise FutureRevision(revision, current_revision=state.current_revision)
    return revision


def _prefix_range(prefix: str) -> tuple[str, str | bytes]:
    """Bounds for ``name >= lower AND name < upper`` matching keys that start with prefix."""
    upper = prefix_upper_bound(prefix)
    # SQLite orders every TEXT value before every BLOB: an empty BLOB is "no upper bound".
    return prefix, upper if upper is not None else b""


def get(conn: sqlite3.Connection, state: LogState, key: str, revision: int) -> KeyValue | None:
    at = check_revision(revision, state)
    row = conn.execute(
        "SELECT id, create_revision, deleted, value FROM kine"
        " WHERE name = ? AND id <= ? ORDER BY id DESC LIMIT 1",
        (key, at),
    ).fetchone()
    if row is None or row[2]:
        return None
    return KeyValue(key, row[3], row[1], row[0])


def list_keys(
    conn: sqlite3.Connection,
    state: LogState,
    prefix: str,
    revision: int,
    start_after: str,
    limit: int,
) -> ListResult:
    at = check_revision(revision, state)
    # SQLite takes the bare columns from the row holding MAX(id), i.e. the key's row at `at`;
    # the (name, id) index yields groups in key order, so LIMIT stops the scan early.
    rows = conn.execute(
        "SELECT MAX(id), name, create_revision, deleted, value FROM kine"
        " WHERE name >= ? AND name < ? AND name > ? AND id <= ?"
        " GROUP BY name HAVING deleted = 0 ORDER BY name LIMIT ?",
        (*_prefix_range(prefix), start_after, at, limit + 1 if limit > 0 else -1),
    ).fetchall()
    more = limit > 0 and len(rows) > limit
    if more:
        rows = rows[:limit]
    items = [KeyValue(name, value, create, mod) for mod, name, create, _, value in rows]
    return ListResult(items=items, revision=at, more=more)


def count_keys(conn: sqlite3.Connection, prefix: str) -> int:
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM (SELECT MAX(id), deleted FROM kine"
        " WHERE name >= ? AND name < ? GROUP BY name HAVING deleted = 0)",
        _prefix_range(prefix),
    ).fetchone()
    return int(count)


def events(
    conn: sqlite3.Connection, state: LogState, prefix: str, after: int, upto: int, limit: int
) -> list[Event]:
    """Events with ``after < revision <= upto`` under ``prefix``, oldest first."""
    if after < state.compact_revision:
        raise Compacted(
            after,
            compact_revision=state.compact_revision,
            current_revision=state.current_revision,
        )
    rows = conn.execute(
        "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value"
        " FROM kine WHERE id > ? AND id <= ? AND name >= ? AND name < ? ORDER BY id LIMIT ?",
        (after, upto, *_prefix_range(prefix), limit),
    ).fetchall()
    return [_event(*row) for row in rows]


def _event(
    revision: int,
    key: str,
    created: int,
    deleted: int,
    create_revision: int,
    prev_revision: int,
    value: bytes,
    old_value: bytes | None,
) -> Event:
    kv = KeyValue(key, value, create_revision, revision)
    if created:
        return Event("create", kv, None)
    prev = KeyValue(
        key, old_value if old_value is not None else b"", create_revision, prev_revision
    )
    return Event("delete" if deleted else "update", kv, prev)


def apply_write(
    conn: sqlite3.Connection,
    kind: WriteKind,
    key: str,
    value: bytes,
    expected_revision: int,
    revision: int,
) -> Event:
    """Append one write as row ``revision`` inside the caller's transaction.

    Raises :class:`KeyExists`, :class:`NotFound` or :class:`Conflict` without writing.
    """
    row = conn.execute(
        "SELECT id, create_revision, deleted, value FROM kine WHERE name = ?"
        " ORDER BY id DESC LIMIT 1",
        (key,),
    ).fetchone()
    current = None if row is None or row[2] else KeyValue(key, row[3], row[1], row[0])
    prev_revision = row[0] if row is not None else 0
    if kind == "create":
        if current is not None:
            raise KeyExists(key, current=current)
        event = Event("create", KeyValue(key, value, revision, revision), None)
    else:
        if current is None:
            raise NotFound(key)
        if expected_revision and expected_revision != current.mod_revision:
            raise Conflict(key, expected_revision=expected_revision, current=current)
        if kind == "update":
            event = Event(
                "update", KeyValue(key, value, current.create_revision, revision), current
            )
        else:
            last = KeyValue(key, current.value, current.create_revision, revision)
            event = Event("delete", last, current)
    prev_value = event.prev.value if event.prev is not None else None
    conn.execute(
        "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, value,"
        " old_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            revision,
            key,
            int(kind == "create"),
            int(kind == "delete"),
            event.kv.create_revision,
            prev_revision,
            event.kv.value,
            prev_value,
        ),
    )
    return event


def compact_step(conn: sqlite3.Connection, after: int, upto: int) -> None:
    """Compact revisions ``after < r <= upto`` inside the caller's transaction.

    A row in the range supersedes its key's previous row; a tombstone in the range ends its
    key. Steps must run in order, each starting where the last one stopped.
    """
    conn.execute(
        "DELETE FROM kine WHERE id IN (SELECT prev_revision FROM kine"
        " WHERE id > ? AND id <= ? AND prev_revision > 0)",
        (after, upto),
    )
    conn.execute("DELETE FROM kine WHERE id > ? AND id <= ? AND deleted = 1", (after, upto))
    conn.execute(
        "INSERT INTO kine_meta (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (_COMPACT_KEY, upto),
    )
