"""The PostgreSQL datastore shared by several servers: pushed watches, one log, restarts, schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from k3py.cluster.server.store import Event, StoreError, Unavailable
from k3py.cluster.server.store.postgres import PostgresDatastore
from k3py.cluster.server.store.postgres_sql import CHANNEL
from tests.store.conftest import KEEP_NOTHING
from tests.store.pg_instance import PostgresInstance

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair(postgres: PostgresInstance) -> AsyncIterator[tuple[PostgresDatastore, ...]]:
    """Two servers' datastores on one database."""
    endpoint = postgres.new_database()
    stores = tuple(
        PostgresDatastore(endpoint, retention=KEEP_NOTHING, poll_interval=0.3) for _ in range(2)
    )
    for store in stores:
        await store.start()
    yield stores
    for store in stores:
        await store.close()


async def _collect(store: PostgresDatastore, prefix: str, count: int) -> list[Event]:
    events: list[Event] = []
    watch = store.watch(prefix, revision=0)
    try:
        async with asyncio.timeout(5):
            async for batch in watch:
                events.extend(batch)
                if len(events) >= count:
                    break
    finally:
        watch.close()
    return events


async def test_a_watch_on_one_server_sees_writes_made_on_another(
    pair: tuple[PostgresDatastore, ...],
) -> None:
    first, second = pair
    seen = asyncio.create_task(_collect(second, "/registry/pods/", 3))
    await asyncio.sleep(0.05)
    created = await first.create("/registry/pods/a/web", b"1")
    updated = await first.update("/registry/pods/a/web", b"2")
    deleted = await first.delete("/registry/pods/a/web")
    events = await seen
    assert [(e.type, e.kv, e.prev) for e in events] == [
        ("create", created, None),
        ("update", updated, created),
        ("delete", deleted, updated),
    ]
    assert await second.get("/registry/pods/a/web", revision=updated.mod_revision) == updated


async def test_concurrent_writers_on_two_servers_share_one_gapless_log(
    pair: tuple[PostgresDatastore, ...],
) -> None:
    first, second = pair

    async def writer(store: PostgresDatastore, name: str) -> list[int]:
        revisions = []
        for i in range(25):
            kv = await store.create(f"/registry/configmaps/w/{name}-{i}", b"x")
            revisions.append(kv.mod_revision)
        return revisions

    results = await asyncio.gather(
        *(writer(store, f"{n}-{i}") for n, store in enumerate(pair) for i in range(8))
    )
    revisions = sorted(r for result in results for r in result)
    assert revisions == list(range(1, 401)), "each write its own revision, none skipped"
    listed = await second.list("/registry/configmaps/")
    assert len(listed.items) == 400
    assert listed.revision == 400
    # Both servers' watchers replay the same history.
    for store in pair:
        replay = store.watch("/registry/configmaps/", revision=200)
        events: list[Event] = []
        async with asyncio.timeout(5):
            async for batch in replay:
                events.extend(batch)
                if len(events) >= 200:
                    break
        replay.close()
        assert [e.kv.mod_revision for e in events] == list(range(201, 401))
    assert first.current_revision == 400


async def test_a_lost_notification_is_covered_by_the_poll(
    pair: tuple[PostgresDatastore, ...],
) -> None:
    first, second = pair
    listener = second._listener
    assert listener is not None
    await listener.remove_listener(CHANNEL, second._on_notify)  # notifications now go nowhere
    seen = asyncio.create_task(_collect(second, "/registry/pods/", 1))
    await asyncio.sleep(0.05)
    created = await first.create("/registry/pods/a/late", b"1")
    events = await seen
    assert [e.kv for e in events] == [created]


async def test_two_servers_compacting_at_once_agree(pair: tuple[PostgresDatastore, ...]) -> None:
    first, second = pair
    for i in range(30):
        await first.create(f"/registry/events/e{i % 10}-{i}", b"x")
        await first.delete(f"/registry/events/e{i % 10}-{i}")
    await first.create("/registry/events/kept", b"x")
    results = await asyncio.gather(first.compact(), second.compact())
    assert max(results) <= 61
    # Each compacts up to the newest revision it has seen; the second server sees the first's
    # last write by notification or poll (0.3 s), so it may need a later round to reach it.
    async with asyncio.timeout(5):
        while not first.compact_revision == second.compact_revision == 61:
            await first.compact()
            await second.compact()
            await asyncio.sleep(0.05)
    listed = await second.list("/registry/events/")
    assert [kv.key for kv in listed.items] == ["/registry/events/kept"]


async def test_restarting_postgres_fails_writes_as_unavailable_then_recovers(
    postgres: PostgresInstance,
) -> None:
    store = PostgresDatastore(
        postgres.new_database(), retention=KEEP_NOTHING, poll_interval=0.2, timeout=3.0
    )
    await store.start()
    try:
        acknowledged: list[str] = []
        refused = 0
        stop = asyncio.Event()

        async def writer(n: int) -> None:
            nonlocal refused
            i = 0
            while not stop.is_set():
                key = f"/registry/configmaps/r/w{n}-{i}"
                try:
                    await store.create(key, b"x")
                except Unavailable:
                    refused += 1
                    await asyncio.sleep(0.05)
                    continue
                acknowledged.append(key)
                i += 1

        writers = [asyncio.create_task(writer(n)) for n in range(4)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(postgres.pg_ctl, "restart")
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*writers)
        assert refused > 0, "writes while PostgreSQL was away should have been refused"
        listed = await store.list("/registry/configmaps/r/")
        assert {kv.key for kv in listed.items} >= set(acknowledged)
        # Watches keep working after the restart (the listener reconnected).
        seen = asyncio.create_task(_collect(store, "/registry/pods/", 1))
        await asyncio.sleep(0.3)
        created = await store.create("/registry/pods/a/after", b"1")
        assert [e.kv for e in await seen] == [created]
    finally:
        await store.close()


async def test_a_database_of_another_program_is_refused(postgres: PostgresInstance) -> None:
    endpoint = postgres.new_database()
    postgres.psql("CREATE TABLE invoices (id int)", endpoint.rsplit("/", 1)[1].split("?")[0])
    store = PostgresDatastore(endpoint)
    with pytest.raises(StoreError, match="holds tables of another program .invoices."):
        await store.start()
    await store.close()


async def test_a_database_of_a_newer_k3py_is_refused(postgres: PostgresInstance) -> None:
    endpoint = postgres.new_database()
    store = PostgresDatastore(endpoint)
    await store.start()
    await store.close()
    database = endpoint.rsplit("/", 1)[1].split("?")[0]
    postgres.psql("UPDATE k3py_meta SET value = 99 WHERE name = 'schema_version'", database)
    again = PostgresDatastore(endpoint)
    with pytest.raises(StoreError, match="written by a newer k3py .schema 99"):
        await again.start()
    await again.close()


async def test_an_unreachable_database_is_one_line(postgres: PostgresInstance) -> None:
    store = PostgresDatastore(postgres.endpoint().replace(str(postgres.port), "1"), timeout=2.0)
    with pytest.raises(StoreError, match="cannot connect to the datastore postgres://k3py@"):
        await store.start()
    await store.close()


async def test_a_user_that_may_not_create_tables_is_told_so(postgres: PostgresInstance) -> None:
    endpoint = postgres.new_database()
    postgres.psql(
        "DO $$ BEGIN CREATE ROLE guest LOGIN PASSWORD 'guest-pw'; EXCEPTION"
        " WHEN duplicate_object THEN NULL; END $$"
    )
    guest = endpoint.replace("k3py:k3py-test-secret@", "guest:guest-pw@")
    store = PostgresDatastore(guest)
    with pytest.raises(
        StoreError, match="refused k3py: permission denied .* must own the database"
    ):
        await store.start()
    await store.close()
