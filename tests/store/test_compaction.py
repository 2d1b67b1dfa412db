"""Compaction: what it keeps, the retention rule (on a virtual clock), the background loop."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from k3py.cluster.server.store import (
    Compacted,
    Retention,
    SQLiteDatastore,
)
from tests.store.conftest import BACKENDS, Backend, FakeClock, make_backend

Store = Backend


def _backend(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    retention: Retention,
    clock: FakeClock,
) -> Backend:
    return make_backend(kind, request, tmp_path, retention=retention, clock=clock)


async def test_compaction_keeps_the_state_at_the_compact_revision(store: Store) -> None:
    await store.create("/registry/pods/a/kept", b"1")
    await store.update("/registry/pods/a/kept", b"2")
    await store.create("/registry/pods/a/gone", b"1")
    await store.delete("/registry/pods/a/gone")
    await store.create("/registry/pods/a/back", b"1")
    await store.delete("/registry/pods/a/back")
    await store.create("/registry/pods/a/back", b"again")
    await store.compact()
    assert store.compact_revision == 7
    listed = await store.list("/registry/pods/", revision=7)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in listed.items] == [
        ("/registry/pods/a/back", b"again", 7),
        ("/registry/pods/a/kept", b"2", 2),
    ]
    assert await store.get("/registry/pods/a/gone", revision=7) is None
    # The log continues normally after compaction.
    updated = await store.update("/registry/pods/a/kept", b"3", expected_revision=2)
    assert updated.mod_revision == 8


async def test_compaction_removes_superseded_rows_from_the_database(
    sqlite_store: SQLiteDatastore,
) -> None:
    for i in range(10):
        await sqlite_store.create(f"/registry/leases/n{i}", b"0")
    for round_ in range(1, 6):
        for i in range(10):
            await sqlite_store.update(f"/registry/leases/n{i}", str(round_).encode())
    await sqlite_store.delete("/registry/leases/n0")
    await sqlite_store.compact()
    with sqlite3.connect(sqlite_store.path) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM kine").fetchone()
    assert rows == 9, "only each live key's latest row should remain"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_retention_keeps_the_last_revisions_by_count(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    clock = FakeClock()
    retention = Retention(min_revisions=10, min_age_seconds=0.0, interval_seconds=3600.0)
    store = _backend(backend, request, tmp_path, retention, clock)
    await store.start()
    try:
        for i in range(25):
            await store.create(f"/registry/events/e{i}", b"x")
        clock.now += 1
        assert await store.compact() == 15
        with pytest.raises(Compacted):
            store.watch("/registry/", revision=14)
        store.watch("/registry/", revision=15).close()
    finally:
        await store.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_retention_keeps_recent_minutes_even_past_the_count(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    clock = FakeClock()
    retention = Retention(min_revisions=0, min_age_seconds=300.0, interval_seconds=3600.0)
    store = _backend(backend, request, tmp_path, retention, clock)
    await store.start()
    try:
        for i in range(5):
            await store.create(f"/registry/events/e{i}", b"x")
        clock.now += 10
        assert await store.compact() == 0, "nothing is five minutes old yet"
        for i in range(5, 8):
            await store.create(f"/registry/events/e{i}", b"x")
        clock.now += 300  # revisions 1-5 existed 300 s ago; 6-8 were written since
        assert await store.compact() == 5
        clock.now += 299
        assert await store.compact() == 5
        clock.now += 1
        assert await store.compact() == 8
    finally:
        await store.close()


async def test_the_background_loop_compacts_without_being_asked(tmp_path: Path) -> None:
    retention = Retention(min_revisions=2, min_age_seconds=0.0, interval_seconds=0.02)
    store = SQLiteDatastore(tmp_path / "state.db", retention=retention)
    await store.start()
    try:
        for i in range(6):
            await store.create(f"/registry/events/e{i}", b"x")
        for _ in range(100):
            if store.compact_revision == 4:
                break
            await asyncio.sleep(0.01)
        assert store.compact_revision == 4
    finally:
        await store.close()


async def test_a_replay_overtaken_by_compaction_fails_with_compacted(store: Store) -> None:
    for i in range(5):
        await store.create(f"/registry/pods/a/p{i}", b"x")
    watch = store.watch("/registry/pods/", revision=1)  # accepted: nothing compacted yet
    await store.compact()
    with pytest.raises(Compacted):
        async for _ in watch:
            pass
