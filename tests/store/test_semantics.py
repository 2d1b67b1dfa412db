"""Key-value semantics every backend shares: revisions, conditional writes, lists, errors."""

from __future__ import annotations

import asyncio

import pytest

from k3py.cluster.server.store import (
    Compacted,
    Conflict,
    FutureRevision,
    KeyExists,
    KeyValue,
    NotFound,
)
from tests.store.conftest import Backend

Store = Backend
POD = "/registry/pods/default/web"


async def test_create_assigns_the_next_global_revision(store: Store) -> None:
    first = await store.create(POD, b'{"a":1}')
    second = await store.create("/registry/pods/default/db", b"{}")
    assert first == KeyValue(POD, b'{"a":1}', create_revision=1, mod_revision=1)
    assert second.mod_revision == second.create_revision == 2
    assert store.current_revision == 2
    assert await store.get(POD) == first


async def test_create_of_an_existing_key_is_refused(store: Store) -> None:
    kv = await store.create(POD, b"1")
    with pytest.raises(KeyExists) as refused:
        await store.create(POD, b"2")
    assert refused.value.current == kv
    assert store.current_revision == 1
    assert await store.get(POD) == kv


async def test_update_keeps_create_revision_and_bumps_mod_revision(store: Store) -> None:
    created = await store.create(POD, b"1")
    await store.create("/registry/other", b"x")
    updated = await store.update(POD, b"2")
    assert updated == KeyValue(POD, b"2", create_revision=created.create_revision, mod_revision=3)


async def test_update_with_a_stale_revision_conflicts_and_writes_nothing(store: Store) -> None:
    created = await store.create(POD, b"1")
    current = await store.update(POD, b"2", expected_revision=created.mod_revision)
    with pytest.raises(Conflict) as conflict:
        await store.update(POD, b"3", expected_revision=created.mod_revision)
    assert conflict.value.current == current
    assert await store.get(POD) == current
    assert store.current_revision == current.mod_revision


async def test_update_and_delete_of_a_missing_key_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update(POD, b"1")
    with pytest.raises(NotFound):
        await store.delete(POD)
    assert store.current_revision == 0


async def test_delete_returns_the_last_value_at_the_delete_revision(store: Store) -> None:
    created = await store.create(POD, b"last")
    deleted = await store.delete(POD)
    assert deleted == KeyValue(
        POD, b"last", create_revision=created.create_revision, mod_revision=2
    )
    assert await store.get(POD) is None
    with pytest.raises(NotFound):
        await store.delete(POD)


async def test_delete_with_a_stale_revision_conflicts(store: Store) -> None:
    created = await store.create(POD, b"1")
    await store.update(POD, b"2")
    with pytest.raises(Conflict):
        await store.delete(POD, expected_revision=created.mod_revision)
    assert await store.get(POD) is not None


async def test_a_deleted_key_can_be_created_again_with_a_new_create_revision(store: Store) -> None:
    await store.create(POD, b"1")
    await store.delete(POD)
    again = await store.create(POD, b"2")
    assert again.create_revision == again.mod_revision == 3


async def test_get_at_a_revision_sees_the_value_of_that_time(store: Store) -> None:
    v1 = await store.create(POD, b"1")
    v2 = await store.update(POD, b"2")
    await store.delete(POD)
    assert await store.get(POD, revision=v1.mod_revision) == v1
    assert await store.get(POD, revision=v2.mod_revision) == v2
    assert await store.get(POD, revision=3) is None
    with pytest.raises(FutureRevision):
        await store.get(POD, revision=4)


async def _fill(store: Store) -> None:
    for namespace, name in [("b", "x"), ("a", "z"), ("a", "y"), ("c", "w")]:
        await store.create(f"/registry/pods/{namespace}/{name}", namespace.encode())
    await store.create("/registry/services/a/y", b"s")
    await store.create("/registry/podsecurity/a", b"not a pod")


async def test_list_returns_live_keys_under_the_prefix_sorted(store: Store) -> None:
    await _fill(store)
    await store.delete("/registry/pods/c/w")
    result = await store.list("/registry/pods/")
    assert [kv.key for kv in result.items] == [
        "/registry/pods/a/y",
        "/registry/pods/a/z",
        "/registry/pods/b/x",
    ]
    assert result.revision == store.current_revision
    assert not result.more
    assert [kv.key for kv in (await store.list("/registry/pods/a/")).items] == [
        "/registry/pods/a/y",
        "/registry/pods/a/z",
    ]
    assert await store.count("/registry/pods/") == 3
    assert await store.count("/registry/") == 5


async def test_list_pages_with_limit_and_start_after_at_one_revision(store: Store) -> None:
    await _fill(store)
    first = await store.list("/registry/pods/", limit=2)
    assert [kv.key for kv in first.items] == ["/registry/pods/a/y", "/registry/pods/a/z"]
    assert first.more
    # Writes between pages must not show up in later pages of the same list.
    await store.create("/registry/pods/b/a", b"new")
    await store.update("/registry/pods/c/w", b"changed")
    rest = await store.list(
        "/registry/pods/",
        revision=first.revision,
        start_after=first.items[-1].key,
        limit=2,
    )
    assert [(kv.key, kv.value) for kv in rest.items] == [
        ("/registry/pods/b/x", b"b"),
        ("/registry/pods/c/w", b"c"),
    ]
    assert rest.revision == first.revision
    assert not rest.more


async def test_list_at_a_past_revision_shows_deleted_keys_and_old_values(store: Store) -> None:
    await store.create("/registry/configmaps/a/one", b"1")
    await store.create("/registry/configmaps/a/two", b"2")
    before = store.current_revision
    await store.delete("/registry/configmaps/a/one")
    await store.update("/registry/configmaps/a/two", b"22")
    past = await store.list("/registry/configmaps/", revision=before)
    assert [(kv.key, kv.value) for kv in past.items] == [
        ("/registry/configmaps/a/one", b"1"),
        ("/registry/configmaps/a/two", b"2"),
    ]
    now = await store.list("/registry/configmaps/")
    assert [(kv.key, kv.value) for kv in now.items] == [("/registry/configmaps/a/two", b"22")]


async def test_reads_older_than_the_compact_revision_are_refused(store: Store) -> None:
    await store.create(POD, b"1")
    await store.update(POD, b"2")
    await store.update(POD, b"3")
    compacted_to = await store.compact()
    assert compacted_to == store.compact_revision == 3
    with pytest.raises(Compacted) as refused:
        await store.list("/registry/pods/", revision=2)
    assert refused.value.compact_revision == 3
    assert refused.value.current_revision == 3
    with pytest.raises(Compacted):
        await store.get(POD, revision=1)
    # The compact revision itself is still readable.
    assert (await store.list("/registry/pods/", revision=3)).items[0].value == b"3"


async def test_concurrent_writers_get_distinct_revisions_and_one_wins_a_race(
    store: Store,
) -> None:
    created = await asyncio.gather(
        *(store.create(f"/registry/configmaps/c/k{i:03}", b"x") for i in range(64))
    )
    assert sorted(kv.mod_revision for kv in created) == list(range(1, 65))
    # Sixteen writers update one key, each expecting the revision they read: one wins.
    base = created[0]
    outcomes = await asyncio.gather(
        *(
            store.update(base.key, f"{n}".encode(), expected_revision=base.mod_revision)
            for n in range(16)
        ),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, KeyValue)]
    assert len(winners) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o is not winners[0])
    assert await store.get(base.key) == winners[0]
    assert store.current_revision == 65
