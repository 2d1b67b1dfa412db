"""Fixtures: started datastores on real SQLite files in temporary directories, and the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.cluster.server.store import MemoryDatastore, Retention, SQLiteDatastore

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


@pytest.fixture(params=["sqlite", "memory"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SQLiteDatastore | MemoryDatastore]:
    """Each semantic test runs against the SQLite datastore and the in-memory fake alike."""
    backend: SQLiteDatastore | MemoryDatastore
    if request.param == "sqlite":
        backend = SQLiteDatastore(tmp_path / "state.db", retention=KEEP_NOTHING)
    else:
        backend = MemoryDatastore(retention=KEEP_NOTHING)
    await backend.start()
    yield backend
    await backend.close()
