"""The SQLite datastore on disk: group commit, restarts, kill -9 durability, endpoints."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3py.cluster.server.store import (
    MemoryDatastore,
    SQLiteDatastore,
    StoreError,
    open_datastore,
)
from k3py.cluster.server.store.postgres import PostgresDatastore
from tests.store.burst_writer import payload
from tests.store.conftest import KEEP_NOTHING

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_concurrent_writes_share_transactions(tmp_path: Path, sync: str) -> None:
    store = SQLiteDatastore(tmp_path / "state.db", sync="full" if sync == "full" else "normal")
    await store.start()
    try:
        written = await asyncio.gather(
            *(store.create(f"/registry/pods/a/p{i}", b"{}") for i in range(300))
        )
        assert sorted(kv.mod_revision for kv in written) == list(range(1, 301))
        assert store.stats.writes == 300
        assert store.stats.transactions < 150, f"no group commit: {store.stats}"
    finally:
        await store.close()


async def test_a_refused_write_does_not_spoil_its_batch(sqlite_store: SQLiteDatastore) -> None:
    await sqlite_store.create("/registry/pods/a/taken", b"1")
    results = await asyncio.gather(
        sqlite_store.create("/registry/pods/a/new1", b"1"),
        sqlite_store.create("/registry/pods/a/taken", b"2"),
        sqlite_store.create("/registry/pods/a/new2", b"1"),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreError)
    assert [kv.mod_revision for kv in results if not isinstance(kv, BaseException)] == [2, 3]
    assert (await sqlite_store.list("/registry/pods/")).revision == 3


async def test_data_and_revisions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteDatastore(path, retention=KEEP_NOTHING)
    await store.start()
    await store.create("/registry/pods/a/kept", b"1")
    await store.create("/registry/pods/a/gone", b"1")
    await store.delete("/registry/pods/a/gone")
    await store.compact()  # removes the tombstone that holds the newest revision
    await store.close()

    reopened = SQLiteDatastore(path, retention=KEEP_NOTHING)
    await reopened.start()
    try:
        assert reopened.current_revision == 3
        assert reopened.compact_revision == 3
        assert [kv.key for kv in (await reopened.list("/registry/")).items] == [
            "/registry/pods/a/kept"
        ]
        again = await reopened.create("/registry/pods/a/gone", b"2")
        assert again.mod_revision == 4, "a revision must never be handed out twice"
    finally:
        await reopened.close()


async def test_a_second_server_on_the_same_file_is_refused(sqlite_store: SQLiteDatastore) -> None:
    second = SQLiteDatastore(sqlite_store.path)
    with pytest.raises(StoreError, match="in use by another k3py server"):
        await second.start()
    await second.close()


async def test_the_database_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    store = open_datastore(None, tmp_path)
    await store.start()
    try:
        await store.create("/registry/secrets/a/token", b"secret")
        path = tmp_path / "server" / "db" / "state.db"
        for file in (path, path.with_name("state.db-wal"), path.with_name("state.db-shm")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()


async def test_a_closed_datastore_refuses_work(sqlite_store: SQLiteDatastore) -> None:
    await sqlite_store.close()
    with pytest.raises(StoreError, match="not running"):
        await sqlite_store.create("/registry/pods/a/p", b"x")
    with pytest.raises(StoreError, match="not running"):
        await sqlite_store.list("/registry/")


def test_endpoints_choose_the_backend(tmp_path: Path) -> None:
    default = open_datastore("", tmp_path, sync="full")
    assert isinstance(default, SQLiteDatastore)
    assert default.path == tmp_path / "server" / "db" / "state.db"
    assert default.sync == "full"
    named = open_datastore(f"sqlite://{tmp_path}/other.db?_journal=WAL", tmp_path)
    assert isinstance(named, SQLiteDatastore)
    assert named.path == tmp_path / "other.db"
    assert isinstance(open_datastore("memory://", tmp_path), MemoryDatastore)
    shared = open_datastore("postgres://k3py:secret@db:5432/k3py?sslmode=require", tmp_path)
    assert isinstance(shared, PostgresDatastore)
    assert shared.endpoint == "postgres://k3py@db:5432/k3py", "no password in messages"
    with pytest.raises(StoreError, match="names no host"):
        open_datastore("postgres://", tmp_path)
    with pytest.raises(StoreError, match="unsupported datastore endpoint"):
        open_datastore("https://etcd:2379", tmp_path)


def _burst_then_kill(path: Path, sync: str) -> list[str]:
    """Run the burst writer, kill -9 it mid-burst, and return every key it acknowledged."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.store.burst_writer", str(path), sync],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        acks: list[str] = []
        deadline = time.monotonic() + 30
        while len(acks) < 1500 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            acks.append(line.strip())
        assert len(acks) >= 1500, f"the writer stopped early after {len(acks)} writes"
        os.kill(process.pid, signal.SIGKILL)  # mid-burst: 32 writers are still going
        rest, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, errors
    # Only newline-terminated lines are acknowledgements; the last piece may be cut short.
    return acks + rest.split("\n")[:-1]


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_acknowledged_writes_survive_kill_9(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "state.db"
    acks = await asyncio.to_thread(_burst_then_kill, path, sync)

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = SQLiteDatastore(path)
    await store.start()
    try:
        stored = {kv.key: kv for kv in (await store.list("/registry/configmaps/burst/")).items}
        missing = [key for key in acks if key not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        for key in acks:
            assert stored[key].value == payload(key, 2), f"{key} lost its acknowledged update"
        for kv in stored.values():  # unacknowledged writes may be there, but whole
            assert kv.value in (payload(kv.key, 1), payload(kv.key, 2))
        assert store.current_revision >= max(kv.mod_revision for kv in stored.values())
    finally:
        await store.close()


async def test_a_failed_transaction_fails_its_writes_and_leaves_no_hole(
    sqlite_store: SQLiteDatastore,
) -> None:
    # A trigger stands in for a disk error: SQLite aborts the statement inside the transaction.
    with sqlite3.connect(sqlite_store.path) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON kine WHEN NEW.name = '/registry/bad'"
            " BEGIN SELECT RAISE(ABORT, 'simulated I/O error'); END"
        )
    results = await asyncio.gather(
        *(sqlite_store.create(f"/registry/ok{i}", b"1") for i in range(5)),
        sqlite_store.create("/registry/bad", b"1"),
        *(sqlite_store.create(f"/registry/ok{i}", b"1") for i in range(5, 10)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures, "the write hitting the error must fail"
    assert all(isinstance(f, StoreError) and "simulated I/O error" in str(f) for f in failures)
    written = sorted(r.mod_revision for r in results if not isinstance(r, BaseException))
    assert written == list(range(1, len(written) + 1)), "rolled-back revisions were reused"
    after = await sqlite_store.create("/registry/after", b"1")
    assert after.mod_revision == len(written) + 1
    listed = await sqlite_store.list("/registry/")
    assert len(listed.items) == len(written) + 1
