"""The deadline of a root slot on trial: reboot when it has not been marked good in time.

U-Boot counts boots, not health: a new slot whose system boots but whose agent never gets Ready
would otherwise run for ever. Busybox init starts this once per boot (``/etc/inittab``, only
when the boot state names a slot on trial). It waits ``k3py.trial=SECONDS`` from the kernel
command line (the slot's own ``/boot/cmdline.env``; :data:`DEFAULT_SECONDS` without it), then
reboots if the running slot is still on trial, so U-Boot spends one more attempt and, with none
left, boots the previous slot. The agent ends the trial
(:func:`k3py.cluster.ota.system.settle_boot`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from k3py.cluster.ota.bootenv import BootEnv, running_slot

# A healthy board is Ready well within this (an emulated ARMv7 board in about 2 minutes); three
# failed attempts then take about 10 minutes, the UpdatePlan's default progress deadline.
DEFAULT_SECONDS = 150.0


def deadline_seconds(cmdline: Path = Path("/proc/cmdline")) -> float:
    try:
        words = cmdline.read_text().split()
    except OSError:
        return DEFAULT_SECONDS
    for word in words:
        if word.startswith("k3py.trial="):
            try:
                return max(10.0, float(word.split("=", 1)[1]))
            except ValueError:
                break
    return DEFAULT_SECONDS


def say(message: str) -> None:
    try:
        with open("/dev/console", "w") as console:
            console.write(f"k3py-trial: {message}\n")
    except OSError:
        print(f"k3py-trial: {message}", file=sys.stderr)


def main() -> int:
    env, slot = BootEnv(), running_slot()
    if not env.available() or env.read().trial != slot:
        return 0
    seconds = deadline_seconds()
    say(f"slot {slot.upper()} is on trial: it must be marked good within {seconds:.0f}s")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(5)
        if env.read().trial != slot:
            return 0
    say(f"slot {slot.upper()} was not marked good in time; rebooting")
    subprocess.run(["reboot"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
