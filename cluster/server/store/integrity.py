"""Is the embedded database whole? Checks at start, the last good copy, and readable failures.

A server must not start an empty cluster over a lost database, nor serve a damaged one:
:func:`check_present` refuses a missing or empty database file when the caller knows the
cluster existed (its PKI did), unless the operator asked for a reset; :func:`quick_check` runs
SQLite's ``PRAGMA quick_check`` under a time bound (a check that runs out of time is skipped
with a warning, never a reason to refuse). After a good check, :func:`save_last_good` copies
the database with SQLite's online backup to ``<db>.last-good`` (when it is small enough and the
disk has room), and every refusal names that copy. :func:`open_failure` turns SQLite's errors
into one line that says what to do: a full disk is a full disk, not corruption.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

from k3py.cluster.server.store.model import StoreError

logger = logging.getLogger("k3py.store")

QUICK_CHECK_SECONDS = 30.0
# The copy is made at every start: only databases up to this size get one.
LAST_GOOD_MAX_BYTES = 512 * 1024 * 1024


class DatastoreCorrupt(StoreError):
    """The database is damaged or missing; the message says what to restore."""


def last_good_path(db: Path) -> Path:
    return db.with_name(db.name + ".last-good")


def _restore_hint(db: Path) -> str:
    backup = last_good_path(db)
    if backup.exists():
        return (
            f"restore the last good copy {backup} (stop k3py, copy it over {db} and remove"
            f" {db.name}-wal and {db.name}-shm)"
        )
    return f"restore {db} from a backup (no last good copy exists beside it)"


def check_present(db: Path, *, cluster_existed: bool, reset: bool) -> None:
    """Refuse a missing or empty database of a cluster that existed, unless resetting."""
    if not cluster_existed or reset:
        return
    missing = not db.exists()
    if missing or db.stat().st_size == 0:
        state = "is missing" if missing else "is empty"
        raise DatastoreCorrupt(
            f"the datastore {db} {state} but this server's certificates show the cluster"
            f" existed: {_restore_hint(db)}, or pass --cluster-reset to start an empty cluster"
        )


def quick_check(conn: sqlite3.Connection, db: Path, seconds: float = QUICK_CHECK_SECONDS) -> bool:
    """Run ``PRAGMA quick_check``; raise when it finds damage. False when it ran out of time."""
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as error:
        if "interrupted" not in str(error):
            raise corrupt(db, str(error)) from error
        logger.warning(
            "datastore check skipped: it did not finish in time",
            extra={"fields": {"path": str(db), "seconds": seconds}},
        )
        return False
    except sqlite3.DatabaseError as error:
        raise corrupt(db, str(error)) from error
    finally:
        conn.set_progress_handler(None, 0)
    if rows != [("ok",)]:
        raise corrupt(db, str(rows[0][0]) if rows else "no answer")
    return True


def corrupt(db: Path, finding: str) -> DatastoreCorrupt:
    first = finding.splitlines()[0] if finding else "unknown damage"
    return DatastoreCorrupt(f"the datastore {db} is damaged ({first}): {_restore_hint(db)}")


def save_last_good(conn: sqlite3.Connection, db: Path) -> None:
    """Copy a database that just passed its check to ``<db>.last-good`` (best effort)."""
    size = db.stat().st_size
    target = last_good_path(db)
    if size > LAST_GOOD_MAX_BYTES or shutil.disk_usage(db.parent).free < 4 * size:
        logger.info("no last good copy of the datastore: too large or too little disk")
        return
    partial = target.with_name(target.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # Secrets inside
        os.close(fd)
        copy = sqlite3.connect(partial)
        try:
            conn.backup(copy)
        finally:
            copy.close()
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as error:
        logger.warning(
            "cannot save the last good datastore copy", extra={"fields": {"error": str(error)}}
        )
        partial.unlink(missing_ok=True)


def open_failure(db: Path, error: BaseException) -> StoreError:
    """One line for a database that cannot be opened: full disk, damage, or another cause."""
    text = str(error)
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "disk is full" in text:
        return StoreError(
            f"cannot open the datastore {db}: the disk is full; free space on"
            f" {db.parent} and start again"
        )
    if isinstance(error, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
    ):
        return corrupt(db, text)
    return StoreError(f"cannot open the datastore {db}: {text}; check the file and its directory")
