"""A background loop of the server that fails (here the garbage collector, on a datastore that
errs) makes /readyz fail and is started again; readiness returns once it keeps running."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.server import app as server_app
from k3py.cluster.server.app import create_app
from k3py.cluster.server.store import MemoryDatastore, StoreError
from tests.server.conftest import ADMIN, TokenAuthenticator, serving, settings_for


class FlakyLists(MemoryDatastore):
    """A datastore whose whole-prefix listings fail a few times (a damaged page, say)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def list(self, prefix: str, **kwargs: Any) -> Any:
        if self.failures > 0 and "deployments" in prefix:
            self.failures -= 1
            raise StoreError("database disk image is malformed")
        return await super().list(prefix, **kwargs)


async def test_a_failed_collector_fails_readyz_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_app, "RESTART_DELAYS", (0.3,))
    monkeypatch.setattr(server_app, "RECOVERED_AFTER_SECONDS", 0.3)
    datastore = FlakyLists(failures=2)
    app = create_app(settings_for(tmp_path), datastore, TokenAuthenticator({"a": ADMIN}))
    async with serving(app) as api:
        failing = await api.get("/readyz?verbose", token="a")
        assert failing.status == 500, failing.text
        assert "k3py-background-tasks failed" in failing.text
        for _ in range(100):
            if (await api.get("/readyz", token="a")).status == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("readyz did not recover after the restart")
        assert datastore.failures == 0
