"""A fresh in-memory cluster per test, stopped afterwards even when the test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.controllers.harness import Cluster


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    made = Cluster()
    yield made
    await made.stop()
