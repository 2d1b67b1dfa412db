"""System update downtime under TCG: an emulated ARM64 agent updated to slot B through a plan.

An agent image of ``qemu-virt-arm64`` is built from this tree (the package cache keeps it short;
``K3PY_OTA_SYSTEM_IMAGE`` names an image to reuse), gets an update key in slot A and joins a
server on the host, as in qemu-tests/test_ota_system.py. A system bundle of the next patch
version, made from that slot (only k3py's metadata differs), is rolled out with an UpdatePlan.
Figures: the install (from the plan's creation to ``Rebooting``: the running slot hashed, the
inactive slot written and read back), and the downtime, from ``Rebooting`` until the server
has the node Ready again on the new version (U-Boot, kernel, init, agent start, registration),
and until the plan's node is ``Healthy`` (the new slot marked good). One QEMU vCPU under TCG on
a shared machine: the load average is recorded beside the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BOARD, ROLE = "qemu-virt-arm64", "agent"


def _image(scratch: Path) -> Path:
    given = os.environ.get("K3PY_OTA_SYSTEM_IMAGE")
    if given:
        return Path(given)
    out = scratch / "out"
    subprocess.run([sys.executable, "-m", "k3py", "image", "build", "--board", BOARD, "--role",
                    ROLE, "--out", str(out), "--work-dir", str(scratch / "work")],
                   check=True, capture_output=True, cwd=REPO)  # fmt: skip
    return out / f"{BOARD}-{ROLE}.img"


def run(*, quick: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "qemu-tests"))
    from qemu_ota import Life, console_slot, make_card, plan, push, serving, wait_for

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="k3py-ota-system-bench-") as tmp:
        scratch = Path(tmp)
        image = _image(scratch)
        with serving(scratch / "server") as server:
            card = make_card(image, BOARD, server, scratch / "card")
            push(server, card.bundle("0.1.1"))
            life = Life(card)
            try:
                qemu = life.start()
                console_slot(qemu)
                wait_for("the node Ready on slot A", lambda: server.ready(BOARD), 400)
                planned = time.monotonic()
                plan(server, "system-bench", "0.1.1", BOARD)
                wait_for("Rebooting", lambda: server.phase("system-bench", BOARD) == "Rebooting",
                         900, interval=0.2)  # fmt: skip
                rebooted = time.monotonic()
                assert console_slot(qemu, 300) == "b"

                def new_and_ready() -> bool:
                    return server.node_version(BOARD).endswith("+k3py-0.1.1") and server.ready(
                        BOARD
                    )

                wait_for("the node Ready on the new version", new_and_ready, 600, interval=0.2)
                ready = time.monotonic()
                wait_for("Healthy", lambda: server.phase("system-bench", BOARD) == "Healthy",
                         300, interval=0.2)  # fmt: skip
                healthy = time.monotonic()
            finally:
                life.stop()
    return {
        "benchmark": "ota_system",
        "board": BOARD,
        "summary": {
            "system_install_s": round(rebooted - planned, 1),
            "system_update_downtime_s": round(ready - rebooted, 1),
            "system_reboot_to_healthy_s": round(healthy - rebooted, 1),
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "quick": quick,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
