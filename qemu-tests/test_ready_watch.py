"""The harness's clock for "boot to Ready": a node's Ready moment comes from the watch event.

A real ``k3py server`` on loopback and the real ``kubectl`` the boards' harness uses: the time
:class:`ReadyWatch` gives a node is the moment its Ready status was written (not a later poll),
and a node still Ready from its previous boot is not taken for the new boot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu_kubectl import ReadyWatch

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _status(server: ServerProcess, name: str, boot: str, ready: str) -> None:
    status = {
        "status": {
            "nodeInfo": {"bootID": boot},
            "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}],
        }
    }
    server.kubectl(
        "patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


def test_ready_is_the_moment_of_the_status_write(server: ServerProcess) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "board"}}
    with ReadyWatch(server.kubeconfig) as watch:
        since = time.monotonic()
        server.kubectl("create", "-f", "-", stdin=json.dumps(node))
        _status(server, "board", "boot-1", "False")
        time.sleep(1.5)  # the node exists and is not Ready: nothing to report
        assert watch.ready_at("board", since) is None

        before = time.monotonic()
        _status(server, "board", "boot-1", "True")
        took = watch.wait("board", since, timeout=20)
        assert before <= since + took <= time.monotonic()

        # A reboot: the node keeps its old Ready until the new boot reports.
        rebooted = time.monotonic()
        time.sleep(1.5)
        assert watch.ready_at("board", since, old_boot="boot-1") is None
        before = time.monotonic()
        _status(server, "board", "boot-2", "True")
        took = watch.wait("board", rebooted, timeout=20, old_boot="boot-1")
        assert before <= rebooted + took <= time.monotonic()

        with pytest.raises(TimeoutError, match="other did not turn Ready"):
            watch.wait("other", since, timeout=1)
