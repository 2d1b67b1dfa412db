"""Firmware updates on a board: switch, crash-loop and deadline roll-back, kill -9 during install.

The firmware run here is a stand-in k3py package (its ``__main__`` logs its version and ends
its trial, or exits at start, or never gets Ready), started by the real launcher as a process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from k3py.cluster.ota.firmware import Firmware, FirmwareError
from k3py.cluster.ota.launcher import _trial_of

MAIN = {
    "good": (
        "import os, signal, socket, sys, time\n"
        "with open(os.environ['K3PY_TEST_LOG'], 'a') as log: log.write('{v}\\n')\n"
        "with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:  # Ready: the trial ends\n"
        "    s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "while True: time.sleep(0.1)\n"
    ),
    "crash": (
        "import os\n"
        "with open(os.environ['K3PY_TEST_LOG'], 'a') as log: log.write('{v}\\n')\n"
        "raise SystemExit(1)\n"
    ),
    "hang": (
        "import os, signal, sys, time\n"
        "with open(os.environ['K3PY_TEST_LOG'], 'a') as log: log.write('{v}\\n')\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "while True: time.sleep(0.1)\n"
    ),
}


def _wheel(tmp_path: Path, version: str, behaviour: str, padding: int = 0) -> Path:
    wheel = tmp_path / f"k3py-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("k3py/__init__.py", f"__version__ = {version!r}\n")
        archive.writestr("k3py/__main__.py", MAIN[behaviour].replace("{v}", version))
        archive.writestr("k3py/image/cli.py", "raise ImportError('host only')\n")
        for number in range(padding):
            archive.writestr(f"k3py/cluster/pad{number}.py", "x = 1\n" * 200)
        archive.writestr(f"k3py-{version}.dist-info/METADATA", f"Version: {version}\n")
    return wheel


def _launch(root: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "K3PY_FIRMWARE_DIR": str(root), "K3PY_TEST_LOG": str(log)}
    return subprocess.Popen(
        [sys.executable, "-m", "k3py.cluster.ota.launcher", "agent"], env=env, cwd=root.parent
    )


def _wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(15)


def test_a_new_firmware_starts_and_keeps_running(tmp_path: Path) -> None:
    root, log = tmp_path / "firmware", tmp_path / "log"
    firmware = Firmware(root)
    firmware.install(_wheel(tmp_path, "0.2.0", "good"), "0.2.0")
    assert firmware.trial() is not None
    launcher = _launch(root, log)
    try:
        _wait_for(lambda: log.exists() and firmware.trial() is None)
        assert log.read_text() == "0.2.0\n"
        name = firmware.current_name()
        assert name is not None
        assert not (root / "versions" / name / "site/k3py/image").exists()
        # While the firmware runs and nothing happens, the launcher sleeps in the kernel
        # (waiting on the child's pidfd and the notify socket) rather than waking to look.
        before = _wakeups(launcher.pid)
        time.sleep(1.0)
        assert _wakeups(launcher.pid) - before <= 2
    finally:
        assert _stop(launcher) == 0


def _wakeups(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("voluntary_ctxt_switches:"))
    return int(line.split()[1])


def test_sighup_restarts_into_the_new_current(tmp_path: Path) -> None:
    root, log = tmp_path / "firmware", tmp_path / "log"
    firmware = Firmware(root)
    firmware.install(_wheel(tmp_path, "0.2.0", "good"), "0.2.0")
    launcher = _launch(root, log)
    try:
        _wait_for(lambda: log.exists() and firmware.trial() is None)
        firmware.install(_wheel(tmp_path, "0.3.0", "good"), "0.3.0")
        launcher.send_signal(signal.SIGHUP)
        _wait_for(lambda: log.read_text().endswith("0.3.0\n") and firmware.trial() is None)
        assert log.read_text() == "0.2.0\n0.3.0\n"
        assert launcher.poll() is None
    finally:
        assert _stop(launcher) == 0


def test_a_firmware_that_exits_at_start_rolls_back_by_itself(tmp_path: Path) -> None:
    root, log = tmp_path / "firmware", tmp_path / "log"
    firmware = Firmware(root)
    firmware.install(_wheel(tmp_path, "0.2.0", "good"), "0.2.0")
    firmware.mark_good()
    firmware.install(_wheel(tmp_path, "0.3.0", "crash"), "0.3.0")
    launcher = _launch(root, log)
    try:
        _wait_for(lambda: log.exists() and log.read_text().endswith("0.2.0\n"))
        assert log.read_text() == "0.3.0\n0.3.0\n0.3.0\n0.2.0\n"  # three attempts, then back
        note = json.loads((root / "rolled-back.json").read_text())
        assert note["reason"] == "crashed 3 times"
        assert note["version"].startswith("0.3.0-")
        assert firmware.version_of(firmware.current) == "0.2.0"
    finally:
        _stop(launcher)


def test_a_firmware_never_ready_rolls_back_at_the_deadline(tmp_path: Path) -> None:
    root, log = tmp_path / "firmware", tmp_path / "log"
    firmware = Firmware(root)
    firmware.install(_wheel(tmp_path, "0.2.0", "good"), "0.2.0")
    firmware.mark_good()
    firmware.install(_wheel(tmp_path, "0.3.0", "hang"), "0.3.0", trial_seconds=3.0)
    launcher = _launch(root, log)
    try:
        _wait_for(lambda: log.exists() and log.read_text().endswith("0.2.0\n"))
        # 0.3.0 ran once (unless a loaded machine let the deadline pass before it started).
        assert log.read_text() in ("0.3.0\n0.2.0\n", "0.2.0\n")
        reason = json.loads((root / "rolled-back.json").read_text())["reason"]
        assert reason == "not Ready before the deadline"
    finally:
        _stop(launcher)


def _assert_startable(firmware: Firmware) -> str:
    """What the launcher would start now: always a whole version (or the image's own)."""
    trial = _trial_of(firmware)
    if not os.path.islink(firmware.current):
        return "image"
    assert firmware.site() is not None, "current names a half-installed version"
    version = firmware.version_of(firmware.current)
    assert version in ("0.2.0", "0.3.0")
    if trial is not None:
        assert version == "0.3.0"
    return version


def test_kill_9_at_random_instants_of_an_install_leaves_a_working_firmware(
    tmp_path: Path,
) -> None:
    root, log = tmp_path / "firmware", tmp_path / "log"
    firmware = Firmware(root)
    firmware.install(_wheel(tmp_path, "0.2.0", "good"), "0.2.0")
    firmware.mark_good()
    good = os.readlink(firmware.current)
    new = _wheel(tmp_path, "0.3.0", "good", padding=150)
    started = time.monotonic()
    install = [sys.executable, "-c", "import sys; from pathlib import Path; "
               "from k3py.cluster.ota.firmware import Firmware; "
               f"Firmware(Path({str(root)!r})).install(Path({str(new)!r}), '0.3.0')"]  # fmt: skip
    subprocess.run(install, check=True)
    full = time.monotonic() - started
    started = time.monotonic()  # the interpreter's start and imports, before install() runs
    subprocess.run([sys.executable, "-c", "import k3py.cluster.ota.firmware"], check=True)
    startup = time.monotonic() - started
    rng = random.Random(15)
    seen: dict[str, int] = {}
    for instant in range(30):
        # Back to 0.2.0 with the new version absent, then an install killed at a random instant.
        os.unlink(firmware.current)
        os.symlink(good, firmware.current)
        firmware.mark_good()
        for leftover in (root / "versions").glob("*0.3.0*"):
            subprocess.run(["rm", "-rf", str(leftover)], check=True)
        process = subprocess.Popen(install)
        time.sleep(rng.uniform(startup * 0.9, full * 1.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        version = _assert_startable(firmware)
        seen[version] = seen.get(version, 0) + 1
        if instant % 10 == 9:  # and the launcher really starts it
            log.unlink(missing_ok=True)
            launcher = _launch(root, log)
            try:
                # The firmware creates the log before it writes its line: wait for the line.
                _wait_for(
                    lambda: log.exists() and log.read_text() != "" and firmware.trial() is None
                )
                assert log.read_text() == f"{version}\n"
            finally:
                _stop(launcher)
    assert sum(seen.values()) == 30
    print(f"install {full:.2f}s; after kill -9: {seen}")


def test_a_wheel_member_outside_the_firmware_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "k3py-9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("k3py/../../evil.py", "x")
    with pytest.raises(FirmwareError, match="escapes"):
        Firmware(tmp_path / "fw").install(wheel, "9")
    assert not (tmp_path / "fw" / "current").exists()
