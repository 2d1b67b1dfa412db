"""One ``k3py server`` for the CRD tests: they create and delete CRDs of their own groups."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("k3py-crd"))
    process.start()
    try:
        yield process
    finally:
        process.stop()
