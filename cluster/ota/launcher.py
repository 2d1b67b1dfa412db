"""The firmware launcher: starts the installed k3py, and brings the previous one back by itself.

The board's supervisor runs ``python3 -m k3py.cluster.ota.launcher agent …`` (from the root
slot, which updates never touch) instead of ``k3py agent …``. The launcher starts k3py from
the firmware directory's ``current`` version (:mod:`k3py.cluster.ota.firmware`), or the image's
own k3py when none is installed, and stays its parent:

- while a version is on trial, every start counts an attempt; at ``MAX_ATTEMPTS`` (a crash
  loop) or past the trial's deadline (never reported Ready), the launcher stops it, switches
  ``current`` back to ``previous`` and starts that; it notes the roll-back in
  ``rolled-back.json`` for the agent to report;
- k3py's ``READY=1`` (systemd's notify protocol, to a socket the launcher gives it as
  ``NOTIFY_SOCKET``) ends the trial: the version stays; the launcher passes ``READY=1`` on to
  its own ``NOTIFY_SOCKET`` (a ``Type=notify`` unit) the first time;
- exit code 75 (``RESTART``), or ``SIGHUP`` to the launcher, means "restart into the new
  current" (after an install): the running k3py is stopped and the next starts at once; pods
  keep running, since the agent adopts healthy containers;
- outside a trial, k3py's exit ends the launcher with the same code (the supervisor respawns).

It is deliberately small and imports nothing heavy: a bug here is the one an update cannot fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from k3py.cluster import sdnotify
from k3py.cluster.ota.firmware import DEFAULT_DIR, MAX_ATTEMPTS, Firmware, Trial

RESTART = 75
POLL_SECONDS = 0.2
STOP_SECONDS = 10.0


def _command(argv: list[str]) -> list[str]:
    # -P: the working directory never shadows the firmware (a k3py/ folder there would).
    return [sys.executable, "-P", "-m", "k3py", *argv]


def _environment(site: Path | None, notify: str) -> dict[str, str]:
    env = dict(os.environ)
    env["NOTIFY_SOCKET"] = notify
    env["K3PY_LAUNCHER_PID"] = str(os.getpid())  # the agent's updater restarts through it
    if site is not None:
        env["PYTHONPATH"] = str(site)
    # Else the launcher's own k3py (the root slot's, or an install's PYTHONPATH) runs.
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


def _notify_socket(root: Path) -> socket.socket:
    """The datagram socket children report READY=1 to (unlinked and bound afresh)."""
    path = root / f".notify.{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


def _ready(sock: socket.socket) -> bool:
    """Whether a READY=1 arrived since the last call."""
    ready = False
    while True:
        try:
            message = sock.recv(4096)
        except BlockingIOError:
            return ready
        ready = ready or b"READY=1" in message.split(b"\n")


def _exit_descriptor(child: subprocess.Popen[bytes]) -> int | None:
    """A descriptor that turns readable when the child exits (a pidfd), where the kernel has
    them (Linux 5.3); without one the launcher looks every ``POLL_SECONDS``."""
    try:
        return os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        return None


def _sleep(sock: socket.socket, exited: int | None, deadline: float | None) -> None:
    """Until the child exits, reports to ``sock``, a signal arrives or ``deadline`` passes.

    The launcher sleeps in the kernel between these events rather than looking every few
    milliseconds (as ``Popen.wait`` with a timeout does): it runs beside k3py for the board's
    whole life, and on an emulated board the looking cost a few tenths of a second of each
    boot.
    """
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    timeout = None
    if exited is None:
        timeout = POLL_SECONDS
    else:
        poller.register(exited, select.POLLIN)
    if deadline is not None:
        left = max(0.0, deadline - time.time())
        timeout = left if timeout is None else min(timeout, left)
    # A signal's handler runs inside the wait, which then goes on (PEP 475): the handlers
    # forward the signal to the child, whose exit ends the wait.
    poller.poll(None if timeout is None else timeout * 1000)


def run(argv: list[str], root: Path = DEFAULT_DIR) -> int:
    firmware = Firmware(root)
    signals: list[int] = []
    child: subprocess.Popen[bytes] | None = None
    upstream = dict(os.environ)  # the launcher's own NOTIFY_SOCKET, if a unit gave one

    def forward(signum: int, _frame: object) -> None:
        signals.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    sock = _notify_socket(root)
    told_upstream = False
    try:
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
            _ready(sock)  # a late READY=1 of the previous child is not this one's
            env = _environment(firmware.site(), sock.getsockname())
            child = subprocess.Popen(_command(argv), env=env)
            exited = _exit_descriptor(child)
            try:
                code = None
                while code is None:
                    _sleep(sock, exited, None if trial is None or signals else trial.deadline)
                    code = child.poll()
                    if code is not None:
                        break
                    if _ready(sock):
                        firmware.mark_good()
                        trial = None
                        if not told_upstream:
                            told_upstream = sdnotify.notify("READY=1", upstream)
                    if trial is not None and time.time() > trial.deadline and not signals:
                        if firmware.trial() is None:
                            trial = None  # ended by another hand (an operator, a test)
                        else:
                            code = _stop(child)
            finally:
                if exited is not None:
                    os.close(exited)
            restart = code == RESTART or signal.SIGHUP in signals
            if signals and not restart:
                return code
            signals.clear()
            if restart or firmware.trial() is not None:
                time.sleep(0 if restart else 1.0)
                continue
            return code
    finally:
        with contextlib.suppress(OSError):
            os.unlink(sock.getsockname())
        sock.close()


def main() -> None:
    root = Path(os.environ.get("K3PY_FIRMWARE_DIR", str(DEFAULT_DIR)))
    sys.exit(run(sys.argv[1:], root))


if __name__ == "__main__":
    main()
