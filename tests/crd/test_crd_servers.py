"""Two ``k3py server`` processes on one PostgreSQL database: a CRD created through one is
served by both (each follows the CRDs through its watch), objects written through either are
the same objects, a restarted server serves the CRD from its first request, and the CRD's
deletion through the other takes them away everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.server.process import ServerProcess
from tests.store.pg_instance import PostgresInstance, postgres_bin

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="needs Debian's postgresql"),
]

CRD = Path(__file__).with_name("widgets.yaml")
TOKEN = "crd-servers-secret-41c2"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    root = tmp_path_factory.mktemp("crd-servers")
    postgres = PostgresInstance()
    started: list[ServerProcess] = []
    try:
        postgres.start()
        endpoint = postgres.new_database()
        for name in ("a", "b"):
            (root / name).mkdir()
            server = ServerProcess(
                root / name, "--datastore-endpoint", endpoint, "--token", TOKEN, "--disable-agent"
            )
            started.append(server)
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()
        postgres.stop()


def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_crd_created_on_one_server_is_served_by_the_other(
    servers: list[ServerProcess],
) -> None:
    first, second = servers
    first.kubectl("apply", "-f", str(CRD))
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "shared"},
        "spec": {"size": "medium"},
    }
    _until(lambda: second.request("POST", WIDGETS, widget)[0] == 201, "the second server")
    status, listed = first.request("GET", WIDGETS)
    assert status == 200
    assert [(w["metadata"]["name"], w["spec"]["replicas"]) for w in listed["items"]] == [
        ("shared", 1)
    ]
    table = second.kubectl("get", "widgets").stdout.split()
    assert table[:4] == ["NAME", "SIZE", "REPLICAS", "AGE"]
    assert table[4:7] == ["shared", "medium", "1"]
    # A restarted server serves the stored CRDs from its first request on.
    second.stop()
    second.start()
    assert second.request("GET", WIDGETS)[0] == 200
    second.kubectl("delete", "crd", "widgets.example.com", "--timeout=30s")
    _until(lambda: first.request("GET", WIDGETS)[0] == 404, "the first server to stop serving")
    status, _ = first.request("GET", "/apis/example.com/v1beta1/namespaces/default/widgets")
    assert status == 404
