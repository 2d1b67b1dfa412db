"""Firmware update downtime: a real agent restarted by the launcher into a new firmware.

A server (no agent of its own) and one agent (the fake runtime: no containers) under
:mod:`k3py.cluster.ota.launcher`, whose firmware directory holds this tree's wheel unpacked
by :mod:`k3py.cluster.ota.firmware`. Each round installs the same wheel as a new version and
sends the launcher ``SIGHUP``; the downtime is from that signal until the new agent's
``READY=1`` ends the trial (old agent stopped, new interpreter started, node registered and
running). The goal is at most 5 s on this machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from k3py.cluster.ota.firmware import Firmware
from k3py.image import firmware as wheels
from tests.processes import free_port, server_argv, stop_process

ROUNDS = 3
BUDGET_S = 5.0
CACHE = Path(os.environ.get("K3PY_CACHE_DIR", "/var/cache/k3py/packages"))


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds} s")
        time.sleep(0.02)


def run(*, quick: bool = False) -> dict[str, Any]:
    wheel = wheels.firmware_wheel(None, CACHE).path
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="k3py-ota-fw-") as tmp:
        root = Path(tmp)
        port = free_port()
        kubeconfig = root / "kubeconfig"
        with (root / "server.log").open("wb") as log:
            processes.append(subprocess.Popen(
                server_argv(root / "server", kubeconfig, port, "--disable-agent"),
                stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        token = root / "server" / "server" / "token"
        try:
            _wait(lambda: kubeconfig.exists() and token.exists(), 60, "the server's start")
            firmware = Firmware(root / "firmware")
            firmware.install(wheel, "0.0.1")
            argv = [sys.executable, "-m", "k3py.cluster.ota.launcher", "agent",
                    "--flannel-backend", "none", "--server", f"https://127.0.0.1:{port}",
                    "--token-file", str(token), "--data-dir", str(root / "agent"),
                    "--node-name", "ota-bench", "--runtime", "fake"]  # fmt: skip
            env = {**os.environ, "K3PY_FIRMWARE_DIR": str(firmware.root)}
            with (root / "agent.log").open("wb") as log:
                launcher = subprocess.Popen(argv, env=env, cwd=root, stdout=log,
                                            stderr=subprocess.STDOUT)  # fmt: skip
            processes.append(launcher)
            _wait(lambda: firmware.trial() is None, 90, "the first agent's READY=1")
            downtimes = []
            for number in range(1 if quick else ROUNDS):
                firmware.install(wheel, f"0.0.{number + 2}")
                started = time.monotonic()
                launcher.send_signal(1)  # SIGHUP: restart into the new current
                _wait(lambda: firmware.trial() is None, 60, "the new agent's READY=1")
                downtimes.append(time.monotonic() - started)
            version = firmware.version_of(firmware.current)
        finally:
            for process in reversed(processes):
                stop_process(process)
    worst = max(downtimes)
    return {
        "benchmark": "ota_firmware",
        "rounds": len(downtimes),
        "downtimes_s": [round(d, 2) for d in downtimes],
        "final_version": version,
        "summary": {
            "firmware_downtime_median_s": round(statistics.median(downtimes), 2),
            "firmware_downtime_max_s": round(worst, 2),
        },
        "budget": {"firmware_downtime_max_s": {"budget": BUDGET_S, "met": worst <= BUDGET_S}},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
