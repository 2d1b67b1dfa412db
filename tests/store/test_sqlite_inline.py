"""SQLite with synchronous=NORMAL: writes committed on the event loop's thread when it may.

The loop commits a turn's writes itself when the writer thread has nothing queued; these tests
check what users rely on around that: revisions follow the order of the writes even while the
thread holds the connection (a compaction step) and writes queue behind it, and the WAL is still
checkpointed, so it does not grow with every write.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.server.store import SQLiteDatastore
from k3py.cluster.server.store.sqlite_writer import GroupCommitWriter


async def test_writes_keep_their_order_while_the_writer_thread_has_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken, go = threading.Event(), threading.Event()
    armed = [False]
    take = GroupCommitWriter._take

    def slow_take(self: GroupCommitWriter, *, block: bool) -> Any:
        """The thread took a batch and is slow to commit it (it does not hold the lock yet)."""
        items = take(self, block=block)
        if items and armed[0]:
            armed[0] = False
            taken.set()
            go.wait(5)
        return items

    monkeypatch.setattr(GroupCommitWriter, "_take", slow_take)
    store = SQLiteDatastore(tmp_path / "state.db", sync="normal")
    await store.start()
    try:
        assert store._writer is not None
        lock = store._writer._conn_lock  # what a compaction or vacuum step holds
        await asyncio.to_thread(lock.acquire)
        armed[0] = True
        first = [asyncio.create_task(store.create(f"/registry/a/first{i}", b"1")) for i in range(5)]
        assert await asyncio.to_thread(taken.wait, 5)
        lock.release()
        # The loop could take the connection now, but the thread still has earlier writes.
        later = asyncio.create_task(store.create("/registry/a/later", b"1"))
        await asyncio.sleep(0.05)
        go.set()
        written = await asyncio.gather(*first, later)
        assert [kv.mod_revision for kv in written] == list(range(1, 7))
        after = [await store.create(f"/registry/a/after{i}", b"1") for i in range(3)]
        assert [kv.mod_revision for kv in after] == [7, 8, 9]
        assert (await store.list("/registry/a/")).revision == 9
    finally:
        go.set()
        await store.close()


async def test_the_wal_is_checkpointed_between_bursts(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteDatastore(path, sync="normal")
    await store.start()
    wal = path.with_name(path.name + "-wal")
    value = b"x" * 2000
    sizes = []
    try:
        for burst in range(4):
            await asyncio.gather(
                *(store.create(f"/registry/b/{burst}-{i}", value) for i in range(400))
            )
            sizes.append(wal.stat().st_size)
            await asyncio.sleep(0.6)  # the thread checkpoints; the next burst reuses the WAL
    finally:
        await store.close()
    assert sizes[-1] <= 2 * sizes[0], f"the WAL grew with every burst: {sizes}"
