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
It starts k3py with :func:`os.posix_spawn` and waits on a pidfd rather than through
:mod:`subprocess`, and handles paths with :mod:`os.path`: on an emulated ARM64 board
``subprocess``, ``pathlib`` and ``json`` took 1.0 s to import (``-X importtime``), most of the
launcher's start, which every boot waits for before k3py starts.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time

from k3py.cluster import sdnotify
from k3py.cluster.ota.firmware import (
    DEFAULT_DIR,
    MAX_ATTEMPTS,
    Firmware,
    Trial,
    unlink_if_present,
)

RESTART = 75
POLL_SECONDS = 0.2
STOP_SECONDS = 10.0


def _command(argv: list[str]) -> list[str]:
    # -P: the working directory never shadows the firmware (a k3py/ folder there would).
    return [sys.executable, "-P", "-m", "k3py", *argv]


class Child:
    """The running k3py: started by ``posix_spawn``, its exit seen through a pidfd.

    Python ignores SIGPIPE and SIGXFSZ; the child gets their defaults back, as
    :class:`subprocess.Popen` gives them. The launcher's own descriptors are close-on-exec.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid = os.posix_spawn(argv[0], argv, env, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        self.returncode: int | None = None
        try:  # Linux 5.3 and later; without one the launcher looks every POLL_SECONDS
            self.exited: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self.exited = None

    def poll(self) -> int | None:
        """The exit code (negative: the signal that ended it) once it exited, else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, seconds: float | None = None) -> int | None:
        """Until it exits, or None after ``seconds``."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if self.exited is None:
                time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))
            else:
                select.select([self.exited], [], [], left)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def close(self) -> None:
        if self.exited is not None:
            os.close(self.exited)
            self.exited = None


def _environment(site: str | None, notify: str) -> dict[str, str]:
    env = dict(os.environ)
    env["NOTIFY_SOCKET"] = notify
    env["K3PY_LAUNCHER_PID"] = str(os.getpid())  # the agent's updater restarts through it
    if site is not None:
        env["PYTHONPATH"] = site
    # Else the launcher's own k3py (the root slot's, or an install's PYTHONPATH) runs.
    return env


def _stop(child: Child) -> int:
    child.send_signal(signal.SIGTERM)
    code = child.wait(STOP_SECONDS)
    if code is None:
        child.send_signal(signal.SIGKILL)
        code = child.wait()
    assert code is not None
    return code


def _note_rollback(firmware: Firmware, trial: Trial, reason: str) -> None:
    import json

    note = {"version": trial.version, "reason": reason, "at": time.time()}
    with open(os.path.join(firmware.root, "rolled-back.json"), "w") as file:
        file.write(json.dumps(note))


def _trial_of(firmware: Firmware) -> Trial | None:
    trial = firmware.trial()
    if trial is not None and trial.version != firmware.current_name():
        firmware.mark_good()  # stale: the install stopped before switching to it
        return None
    return trial


def _notify_socket(root: str) -> socket.socket:
    """The datagram socket children report READY=1 to (unlinked and bound afresh)."""
    path = os.path.join(root, f".notify.{os.getpid()}")
    os.makedirs(root, exist_ok=True)
    unlink_if_present(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(path)
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


def run(argv: list[str], root: str = DEFAULT_DIR) -> int:
    firmware = Firmware(root)
    signals: list[int] = []
    child: Child | None = None
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
            child = Child(_command(argv), env)
            try:
                code = None
                while code is None:
                    deadline = None if trial is None or signals else trial.deadline
                    _sleep(sock, child.exited, deadline)
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
                child.close()
            restart = code == RESTART or signal.SIGHUP in signals
            if signals and not restart:
                return code
            signals.clear()
            if restart or firmware.trial() is not None:
                time.sleep(0 if restart else 1.0)
                continue
            return code
    finally:
        unlink_if_present(sock.getsockname())
        sock.close()


def main() -> None:
    sys.exit(run(sys.argv[1:], os.environ.get("K3PY_FIRMWARE_DIR", DEFAULT_DIR)))


if __name__ == "__main__":
    main()
