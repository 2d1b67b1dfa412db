"""Fixtures: started datastores on real SQLite files, in a throw-away PostgreSQL, and the fake.

The PostgreSQL instance is started once per session (initdb takes a second or two) and each test
gets a fresh database in it; tests that use it are marked ``integration`` and skipped where
Debian's ``postgresql`` is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from k3py.cluster.server.store import MemoryDatastore, Retention, SQLiteDatastore
from k3py.cluster.server.store.postgres import PostgresDatastore
from tests.store.pg_instance import PostgresInstance, postgres_bin

Backend = SQLiteDatastore | MemoryDatastore | PostgresDatastore
BACKENDS = ["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.integration)]

# Compact only when a test asks, and then everything it may: tests state their own retention.
KEEP_NOTHING = Retention(min_revisions=0, min_age_seconds=0.0, interval_seconds=3600.0)


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteDatastore]:
    store = SQLiteDatastore(tmp_path / "state.db", retention=KEEP_NOTHING)
    await store.start()
    yield store
    await store.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresInstance]:
    """A PostgreSQL instance on a free loopback port for the whole session, always stopped."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    instance = PostgresInstance()
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def make_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **options: object
) -> Backend:
    """A (not started) datastore of one kind; PostgreSQL ones get a fresh database."""
    if kind == "sqlite":
        return SQLiteDatastore(tmp_path / "state.db", **options)  # type: ignore[arg-type]
    if kind == "postgres":
        instance: PostgresInstance = request.getfixturevalue("postgres")
        return PostgresDatastore(instance.new_database(), **options)  # type: ignore[arg-type]
    return MemoryDatastore(**options)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each contract test runs against SQLite, PostgreSQL and the in-memory fake alike."""
    backend = make_backend(request.param, request, tmp_path, retention=KEEP_NOTHING)
    await backend.start()
    yield backend
    await backend.close()
