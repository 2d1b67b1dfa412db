"""System bundles through an UpdatePlan on emulated boards, booted by U-Boot's A/B script.

An agent card (the session's image, with an update key put into its slot A, as
``--ota-key`` does) joins a server on the host. New versions are made cheaply from that slot
(its k3py metadata says a newer version; the bad one's agent cannot start and its slot's
command line asks for a short trial), bundled and pushed. Each board lives one life, QEMU's
disk a real file (no ``-snapshot``) so the boot state persists across power cuts:

- ARM64: QEMU killed while the inactive slot is written → the board boots slot A and writes it
  again; killed just after the switch, and again during the first boot of slot B → it boots B,
  which marks itself good once Ready: the plan's node is Healthy and ``kubectl get nodes -o
  wide`` shows the new version; then a bad bundle: slot A on trial never gets Ready, U-Boot
  runs out of attempts and boots B again by itself, and the plan says RolledBack.
- ARMv7: an update to slot B with the new version in ``kubectl get nodes -o wide``.

The time from the update's reboot to Ready again (a system update's downtime) is printed and
recorded (``bench/ota_system_bench.py`` runs the same steps as a benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from qemu_ota import Life, Server, console_slot, make_card, plan, push, serving, wait_for

from tests.image.builds import ImageFor

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("ota-server")) as running:
        yield running


def test_arm64_update_power_cuts_and_a_bad_bundle_that_falls_back(
    server: Server, image_for: ImageFor, tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    board = "qemu-virt-arm64"
    card = make_card(image_for(board, "agent").image, board, server, tmp_path)
    push(server, card.bundle("0.1.1"))
    push(server, card.bundle("0.1.2", bad=True))
    life = Life(card)
    try:
        assert console_slot(life.start()) == "a"
        wait_for("the node Ready on slot A", lambda: server.ready(board), 300)
        old = server.node_version(board)
        plan(server, "system-0-1-1", "0.1.1", board)
        # Power cut while slot B is written: slot A boots, the write starts over.
        wait_for("Installing", lambda: server.phase("system-0-1-1", board) == "Installing", 300,
                 interval=0.3)  # fmt: skip
        time.sleep(2)
        life.cut_power()
        assert console_slot(life.start()) == "a"
        # Power cut as soon as the boot switched (the entry says Rebooting).
        wait_for("Rebooting", lambda: server.phase("system-0-1-1", board) == "Rebooting", 600,
                 interval=0.3)  # fmt: skip
        life.cut_power()
        qemu = life.start()
        switched = time.monotonic()
        assert console_slot(qemu) == "b"
        # Power cut during the first boot of slot B: it is booted again (attempts left).
        qemu.expect(r"Starting kernel|Booting Linux", 60)
        time.sleep(3)
        life.cut_power()
        assert console_slot(life.start()) == "b"
        wait_for("Healthy", lambda: server.phase("system-0-1-1", board) == "Healthy", 400)
        wide = server.kubectl("get", "nodes", "-o", "wide")
        assert "+k3py-0.1.1" in wide, wide
        assert "k3py 0.1.1 (agent, arm64)" in wide, wide  # OS-IMAGE: the slot's os-release
        assert server.ready(board)
        print(f"{board}: from the switch to Healthy on slot B, with a power cut in between: "
              f"{time.monotonic() - switched:.0f}s (was {old})\n{wide}")  # fmt: skip
        # A bad bundle: slot A on trial never gets Ready; U-Boot falls back to B by itself.
        plan(server, "system-0-1-2", "0.1.2", board)
        assert life.qemu is not None
        qemu = life.qemu
        wait_for("Rebooting", lambda: server.phase("system-0-1-2", board) == "Rebooting", 600,
                 interval=0.5)  # fmt: skip
        assert console_slot(qemu) == "a"
        qemu.expect(r"k3py-trial: slot A was not marked good in time", 300)
        for _ in range(2):
            assert console_slot(qemu, 180) == "a"
        assert console_slot(qemu, 300) == "b"
        wait_for("RolledBack", lambda: server.phase("system-0-1-2", board) == "RolledBack", 400)
        entry = server.entry("system-0-1-2", board)
        assert "slot A did not become Ready" in entry.get("message", ""), entry
        assert server.node_version(board).endswith("+k3py-0.1.1")
        record_property("boots", life.boots)
    finally:
        life.stop()


def test_armv7_takes_a_system_bundle_into_slot_b(
    server: Server, image_for: ImageFor, tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    board = "qemu-virt-armv7"
    card = make_card(image_for(board, "agent").image, board, server, tmp_path)
    push(server, card.bundle("0.1.3"))
    life = Life(card)
    try:
        qemu = life.start()
        assert console_slot(qemu) == "a"
        wait_for("the node Ready on slot A", lambda: server.ready(board), 400)
        plan(server, "system-0-1-3", "0.1.3", board)
        wait_for("Rebooting", lambda: server.phase("system-0-1-3", board) == "Rebooting", 900,
                 interval=0.5)  # fmt: skip
        rebooted = time.monotonic()
        assert console_slot(qemu, 300) == "b"
        wait_for("Healthy", lambda: server.phase("system-0-1-3", board) == "Healthy", 600)
        downtime = time.monotonic() - rebooted
        wide = server.kubectl("get", "nodes", "-o", "wide")
        assert "+k3py-0.1.3" in wide, wide
        assert "k3py 0.1.3 (agent, armhf)" in wide, wide  # OS-IMAGE: the slot's os-release
        record_property("system_update_downtime_s", round(downtime, 1))
        print(f"{board}: Rebooting → Healthy on slot B in {downtime:.0f}s\n{wide}")
    finally:
        life.stop()
