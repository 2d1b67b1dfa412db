"""Watch: replay from a revision then live without gaps, prefix filters, slow watchers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from k3py.cluster.server.store import (
    Compacted,
    Event,
    SQLiteDatastore,
    Watch,
    WatchExpired,
)
from k3py.cluster.server.store.watch import REPLAY_CHUNK
from tests.store.conftest import BACKENDS, KEEP_NOTHING, Backend, make_backend

Store = Backend


async def _collect(watch: Watch, count: int) -> list[Event]:
    events: list[Event] = []

    async def consume() -> None:
        async for batch in watch:
            assert batch, "a watch must never yield an empty batch"
            events.extend(batch)
            if len(events) >= count:
                return

    await asyncio.wait_for(consume(), 5.0)
    return events


def _summary(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type, e.kv.key, e.kv.mod_revision) for e in events]


async def test_watch_from_now_sees_later_changes_with_previous_values(store: Store) -> None:
    await store.create("/registry/pods/a/old", b"0")
    watch = store.watch("/registry/pods/", revision=0)
    created = await store.create("/registry/pods/a/web", b"1")
    updated = await store.update("/registry/pods/a/web", b"2")
    await store.create("/registry/services/a/web", b"not watched")
    deleted = await store.delete("/registry/pods/a/web")
    events = await _collect(watch, 3)
    watch.close()
    assert [e.type for e in events] == ["create", "update", "delete"]
    assert (events[0].kv, events[0].prev) == (created, None)
    assert (events[1].kv, events[1].prev) == (updated, created)
    assert (events[2].kv, events[2].prev) == (deleted, updated)
    assert deleted.value == b"2"


async def test_watch_from_a_past_revision_replays_then_continues_live(store: Store) -> None:
    for i in range(5):
        await store.create(f"/registry/pods/a/p{i}", b"x")
    start = store.current_revision
    for i in range(5):
        await store.update(f"/registry/pods/a/p{i}", b"y")
    await store.delete("/registry/pods/a/p0")
    watch = store.watch("/registry/pods/", revision=start)

    async def writer() -> None:
        for i in range(20):
            await store.create(f"/registry/pods/b/q{i}", b"z")

    live = asyncio.create_task(writer())
    events = await _collect(watch, 26)
    await live
    watch.close()
    revisions = [e.kv.mod_revision for e in events]
    assert revisions == list(range(start + 1, start + 27)), "gap or duplicate in the stream"
    assert _summary(events)[5] == ("delete", "/registry/pods/a/p0", start + 6)
    assert events[0].type == "update"
    assert events[0].prev is not None
    assert events[0].prev.value == b"x"


async def test_a_long_replay_is_delivered_in_chunks_in_order(store: Store) -> None:
    total = REPLAY_CHUNK * 2 + 7
    await asyncio.gather(*(store.create(f"/registry/leases/n{i:04}", b"l") for i in range(total)))
    watch = store.watch("/registry/leases/", revision=1)
    events = await _collect(watch, total - 1)
    watch.close()
    assert [e.kv.mod_revision for e in events] == list(range(2, total + 1))


async def test_watch_started_at_a_committed_revision_does_not_repeat_it(store: Store) -> None:
    # What a client does: list, then watch from the list's revision.
    await store.create("/registry/pods/a/one", b"1")
    listed = await store.list("/registry/pods/")
    watch = store.watch("/registry/pods/", revision=listed.revision)
    second = await store.create("/registry/pods/a/two", b"2")
    events = await _collect(watch, 1)
    watch.close()
    assert [e.kv for e in events] == [second]


async def test_watch_filters_by_prefix_during_replay(store: Store) -> None:
    await store.create("/registry/pods/a/p", b"1")
    await store.create("/registry/pods/b/p", b"1")
    await store.create("/registry/podtemplates/a/p", b"1")
    watch = store.watch("/registry/pods/b/", revision=1)
    await store.create("/registry/pods/b/q", b"2")
    events = await _collect(watch, 2)
    watch.close()
    assert [e.kv.key for e in events] == ["/registry/pods/b/p", "/registry/pods/b/q"]


async def test_watch_from_before_the_compact_revision_is_refused(store: Store) -> None:
    for i in range(4):
        await store.create(f"/registry/pods/a/p{i}", b"x")
    await store.compact()
    with pytest.raises(Compacted) as refused:
        store.watch("/registry/pods/", revision=2)
    assert refused.value.compact_revision == 4
    watch = store.watch("/registry/pods/", revision=4)  # the compact revision itself is fine
    latest = await store.create("/registry/pods/a/p9", b"x")
    assert [e.kv for e in await _collect(watch, 1)] == [latest]
    watch.close()


async def test_close_ends_the_iteration(store: Store) -> None:
    watch = store.watch("/registry/", revision=0)

    async def consume() -> int:
        return sum([len(batch) async for batch in watch])

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    watch.close()
    assert await asyncio.wait_for(consumer, 2) == 0
    assert store.watcher_count == 0


async def test_closing_the_datastore_ends_its_watches(tmp_path: Path) -> None:
    store = SQLiteDatastore(tmp_path / "state.db", retention=KEEP_NOTHING)
    await store.start()
    watch = store.watch("/registry/", revision=0)
    await store.create("/registry/pods/a/p", b"x")
    await store.close()
    batches = [batch async for batch in watch]
    assert [e.kv.key for batch in batches for e in batch] == ["/registry/pods/a/p"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_slow_watcher_is_cut_off_while_others_keep_receiving(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    store = make_backend(backend, request, tmp_path, retention=KEEP_NOTHING, max_watch_pending=50)
    await store.start()
    try:
        slow = store.watch("/registry/", revision=0)  # never read until the end
        fast = store.watch("/registry/", revision=0)
        fast_events = asyncio.create_task(_collect(fast, 200))
        for i in range(200):
            # The writer must never wait for the stuck watcher.
            await asyncio.wait_for(store.create(f"/registry/pods/a/p{i}", b"x"), 2)
        received = await fast_events
        assert [e.kv.mod_revision for e in received] == list(range(1, 201))
        assert store.watcher_count == 1, "the slow watcher should have been dropped"
        with pytest.raises(WatchExpired):
            async for _ in slow:
                pass
        fast.close()
    finally:
        await store.close()


async def test_a_watcher_replaying_too_slowly_for_live_traffic_is_cut_off(
    tmp_path: Path,
) -> None:
    store = SQLiteDatastore(tmp_path / "s.db", retention=KEEP_NOTHING, max_watch_pending=20)
    await store.start()
    try:
        for i in range(10):
            await store.create(f"/registry/pods/a/old{i}", b"x")
        watch = store.watch("/registry/pods/", revision=1)  # replay pending, nothing read yet
        for i in range(30):
            await store.create(f"/registry/pods/a/new{i}", b"x")
        with pytest.raises(WatchExpired):
            async for _ in watch:
                pass
        assert store.watcher_count == 0
    finally:
        await store.close()
