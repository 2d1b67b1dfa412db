"""An agent image, as built, joins a k3py server and its node turns Ready.

The server runs on the host's loopback; QEMU's user network lets the guest reach it as
10.0.2.2 (so the server's certificate names that address with ``--tls-san``). The agent's
settings go into the card's ``k3py.yaml`` on the FAT boot partition, with mtools, exactly as a
user would edit the card (or ``k3py flash --config``) before the first boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from qemu_driver import BOOT_PARTITION_OFFSET, QemuBoard, free_port, timeout_factor

from k3py.image.board import load_board
from tests.image.builds import ImageFor

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

HOST_ALIAS = "10.0.2.2"  # the host's loopback as QEMU's user network shows it to the guest


def _wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds * timeout_factor()
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds * timeout_factor():.0f}s")
        time.sleep(1)


def _node_ready(kubeconfig: Path, node: str) -> bool:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "node", node, "-o",
         'jsonpath={.status.conditions[?(@.type=="Ready")].status}'],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    return result.returncode == 0 and result.stdout.strip() == "True"


@pytest.mark.parametrize("board", ["qemu-virt-arm64", "qemu-virt-armv7"])
def test_agent_image_joins_a_server_and_its_node_turns_ready(
    board: str,
    image_for: ImageFor,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing (the integration tier installs it at /usr/bin/kubectl)")
    built = image_for(board, "agent")
    port = free_port()
    data = tmp_path / "server"
    kubeconfig = tmp_path / "kubeconfig"
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "k3py", "server", "--data-dir", str(data),
         "--bind-address", "127.0.0.1", "--https-listen-port", str(port),
         "--tls-san", HOST_ALIAS, "--disable-agent", "--write-kubeconfig", str(kubeconfig)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        token_file = data / "server" / "token"
        _wait_for("the server's join token", token_file.exists, 60)
        _wait_for("the server's kubeconfig", kubeconfig.exists, 60)
        card = tmp_path / "card.img"
        subprocess.run(["cp", "--sparse=always", str(built.image), str(card)], check=True)
        settings = tmp_path / "k3py.yaml"
        settings.write_text(
            f"role: agent\nserver: https://{HOST_ALIAS}:{port}\n"
            f"token: {token_file.read_text().strip()}\nnode-name: {board}\n"
        )
        subprocess.run(
            ["mcopy", "-o", "-i", f"{card}@@{BOOT_PARTITION_OFFSET}", str(settings), "::k3py.yaml"],
            check=True,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )
        with QemuBoard(load_board(board), card, tmp_path / "vm") as qemu:
            qemu.wait_for_ready()
            _wait_for(f"node {board} Ready", lambda: _node_ready(kubeconfig, board), 300)
            ready = time.monotonic() - qemu.started_at
        record_property("boot_to_node_ready_s", round(ready, 1))
        print(f"{board}: node Ready {ready:.1f}s after QEMU started")
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
