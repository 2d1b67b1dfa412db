"""An in-process API server for the OTA tests (admin, node1 and an unprivileged jane)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.cluster.server.app import create_app
from k3py.cluster.server.store import MemoryDatastore
from tests.server.conftest import (
    ADMIN,
    NOBODY,
    NODE1,
    Api,
    TokenAuthenticator,
    serving,
    settings_for,
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    users = {"admin": ADMIN, "node1": NODE1, "jane": NOBODY}
    settings = settings_for(tmp_path / "server")
    app = create_app(settings, MemoryDatastore(), TokenAuthenticator(users))
    async with serving(app) as served:
        yield served
