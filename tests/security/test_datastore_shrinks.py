"""The SQLite file shrinks after compaction: free pages go back to the file system instead of
keeping the peak size for ever (a 1.98 GB file once held 26 MB of live data)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from k3py.cluster.server.store import Retention, SQLiteDatastore

KEEP_NOTHING = Retention(min_revisions=0, min_age_seconds=0.0, interval_seconds=3600.0)
VALUE = b"x" * 8000


def _size(db: Path) -> int:
    return db.stat().st_size + sum(
        p.stat().st_size for p in db.parent.glob(db.name + "-*") if p.exists()
    )


async def _churn(store: SQLiteDatastore, keys: int, rounds: int) -> None:
    for key in range(keys):
        await store.create(f"/registry/configmaps/default/c{key}", VALUE)
    for _ in range(rounds):
        for key in range(keys):
            await store.update(f"/registry/configmaps/default/c{key}", VALUE, expected_revision=0)


async def test_compaction_gives_space_back(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = SQLiteDatastore(db, retention=KEEP_NOTHING)
    await store.start()
    await _churn(store, keys=50, rounds=40)  # 2,050 rows of 8 KB: ~17 MB, 50 of them live
    peak = _size(db)
    await store.compact()
    for _ in range(100):  # the writer returns free pages in steps after compacting
        await asyncio.sleep(0.05)
    await store.close()
    after = _size(db)
    assert peak > 12_000_000
    assert after < peak / 4, (peak, after)


async def test_an_old_database_is_converted_once(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE filler (x BLOB)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(VALUE,)] * 1000)
    conn.execute("DROP TABLE filler")  # 8 MB of free pages left in the file
    conn.commit()
    conn.close()
    before = db.stat().st_size
    store = SQLiteDatastore(db)
    await store.start()
    await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    conn.close()
    assert db.stat().st_size < before / 4
