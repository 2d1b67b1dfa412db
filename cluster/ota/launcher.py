"""The firmware launcher: starts the installed k3py, and brings the previous one back by itself.

The board's supervisor runs ``python3 -m k3py.cluster.ota.launcher agent …`` (from the root
slot, which updates never touch) instead of ``k3py agent …``. The launcher starts k3py from
the firmware directory's ``current`` version (:mod:`k3py.cluster.ota.firmware`), or the image's
own k3py when none is installed, and stays its parent:

- while a version is on trial, every start counts an attempt; at ``MAX_ATTEMPTS`` (a crash
  loop) or past the trial's deadline (never reported Ready), the launcher stops it, switches
  ``current`` back to ``previous`` and starts that; it notes the roll-back in
  ``rolled-back.json`` for the agent to report;
- exit code 75 (``RESTART``) means "restart into the new current" (after an install): the
  next version starts at once; pods keep running, since the agent adopts healthy containers;
- outside a trial, k3py's exit ends the launcher with the same code (the supervisor respawns).

It is deliberately small and imports nothing heavy: a bug here is the one an update cannot fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from k3py.cluster.ota.firmware import DEFAULT_DIR, MAX_ATTEMPTS, Firmware, Trial

RESTART = 75
POLL_SECONDS = 0.2
STOP_SECONDS = 10.0


def _command(argv: list[str]) -> list[str]:
    # -P: the working directory never shadows the firmware (a k3py/ folder there would).
    return [sys.executable, "-P", "-m", "k3py", *argv]


def _environment(site: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    else:
        env.pop("PYTHONPATH", None)
    return env


def _stop(child: subprocess.Popen[bytes]) -> int:
    child.terminate()
    try:
        return child.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def _note_rollback(firmware: Firmware, trial: Trial, reason: str) -> None:
    note = {"version": trial.version, "reason": reason, "at": time.time()}
    (firmware.root / "rolled-back.json").write_text(json.dumps(note))


def _trial_of(firmware: Firmware) -> Trial | None:
    trial = firmware.trial()
    if trial is not None and trial.version != firmware.current_name():
        firmware.mark_good()  # stale: the install stopped before switching to it
        return None
    return trial


def run(argv: list[str], root: Path = DEFAULT_DIR) -> int:
    firmware = Firmware(root)
    stopping: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        trial = _trial_of(firmware)
        if trial is not None:
            reason = None
            if trial.attempts >= MAX_ATTEMPTS:
                reason = f"crashed {trial.attempts} times"
            elif time.time() > trial.deadline:
                reason = "not Ready before the deadline"
            if reason is not None:
                _note_rollback(firmware, trial, reason)
                firmware.roll_back()
                continue
            firmware.write_trial(Trial(trial.version, trial.attempts + 1, trial.deadline))
        child = subprocess.Popen(_command(argv), env=_environment(firmware.site()))
        code = None
        while code is None:
            try:
                code = child.wait(POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if trial is not None and not stopping:
                    current = firmware.trial()
                    if current is None:
                        trial = None  # marked good
                    elif time.time() > current.deadline:
                        code = _stop(child)
        if stopping:
            return code
        if code == RESTART or firmware.trial() is not None:
            time.sleep(0 if code == RESTART else 1.0)
            continue
        return code


def main() -> None:
    root = Path(os.environ.get("K3PY_FIRMWARE_DIR", str(DEFAULT_DIR)))
    sys.exit(run(sys.argv[1:], root))


if __name__ == "__main__":
    main()
