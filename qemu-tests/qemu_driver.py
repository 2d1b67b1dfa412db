"""A small driver for emulated boards: boot a built image under QEMU and talk to its console.

It boots the image as built: through the board's own firmware (U-Boot as ``-bios``, which runs
the image's boot script), or for a board without one, with the kernel, initramfs and command
line read from the image's boot partition with mtools; with ``-snapshot`` by default, so the
image file is never changed. The whole
serial console goes to a log file; every timeout is multiplied by ``K3PY_TIMEOUT_FACTOR`` (for
slow machines); a command's exit code is read through unique markers, never by parsing the
echo of ``$?`` out of console noise. The multi-board cluster harness builds on this class.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pexpect

from k3py.image.board import Board
from k3py.image.uboot import qemu_env_flash

BOOT_PARTITION_OFFSET = 1 << 20  # the FAT starts at 1 MiB (sfdisk's alignment)
READY_LINE = "k3py-boot: ready"


def timeout_factor() -> float:
    """``K3PY_TIMEOUT_FACTOR`` (default 1): scales every wait for slow or busy machines."""
    try:
        return max(0.1, float(os.environ.get("K3PY_TIMEOUT_FACTOR", "1")))
    except ValueError:
        return 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    output: str


class ConsoleError(AssertionError):
    """The board did not reach a state or answer in time; the console log says why."""


class QemuBoard:
    """One emulated board booted from a disk image, driven through its serial console."""

    def __init__(
        self,
        board: Board,
        image: Path,
        workdir: Path,
        *,
        forwards: Mapping[int, int] | None = None,
        snapshot: bool = True,
        root_password: str | None = None,
    ) -> None:
        if board.qemu is None:
            raise ValueError(f"board {board.name} has no [qemu] table: it cannot be emulated")
        self.board = board
        self.image = image
        self.workdir = workdir
        self.forwards = dict(forwards or {})  # guest port → host port on 127.0.0.1
        self.snapshot = snapshot  # writes go to a temporary overlay, never into the image
        self.root_password = root_password  # set when k3py.yaml gives root a password
        self.console_log = workdir / "console.log"
        self.factor = timeout_factor()
        self.started_at = 0.0
        self._child: pexpect.spawn | None = None

    def _boot_file(self, name: str) -> Path:
        target = self.workdir / name
        subprocess.run(
            ["mcopy", "-o", "-i", f"{self.image}@@{BOOT_PARTITION_OFFSET}", f"::{name}",
             str(target)],
            check=True,
            capture_output=True,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )  # fmt: skip
        return target

    def argv(self) -> list[str]:
        assert self.board.qemu is not None
        qemu = self.board.qemu
        hostfwd = "".join(
            f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.forwards.items()
        )
        fill = {"image": str(self.image), "hostfwd": hostfwd}
        if any("{uboot_env}" in arg for arg in qemu.args):  # U-Boot's environment flash
            firmware = Path(qemu.args[qemu.args.index("-bios") + 1])
            flash = self.workdir / "uboot-env.flash"
            self.workdir.mkdir(parents=True, exist_ok=True)
            flash.write_bytes(qemu_env_flash(firmware))
            fill["uboot_env"] = str(flash)
        if any("{kernel}" in arg for arg in qemu.args):  # a board QEMU boots directly
            fill["kernel"] = str(self._boot_file("vmlinuz"))
            fill["initrd"] = str(self._boot_file("initrd.img"))
            fill["cmdline"] = self._boot_file("cmdline.txt").read_text().strip()
        args = [arg.format(**fill) for arg in qemu.args]
        snapshot = ["-snapshot"] if self.snapshot else []
        return [qemu.binary, "-M", qemu.machine, "-cpu", qemu.cpu, "-m", str(qemu.memory_mib),
                *snapshot, *args]  # fmt: skip

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        (self.workdir / "qemu-command.txt").write_text(shlex.join(argv) + "\n")
        self.started_at = time.monotonic()
        self._child = pexpect.spawn(
            argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=None
        )
        self._child.logfile_read = self.console_log.open("a")
        self._child.delaybeforesend = 0.05

    @property
    def child(self) -> pexpect.spawn:
        if self._child is None:
            raise ConsoleError("the board is not started")
        return self._child

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for a regular expression on the console, up to ``timeout`` × the factor."""
        try:
            self.child.expect(pattern, timeout=timeout * self.factor)
        except pexpect.TIMEOUT:
            raise ConsoleError(
                f"{self.board.name}: no {pattern!r} on the console within "
                f"{timeout * self.factor:.0f}s (see {self.console_log})"
            ) from None
        except pexpect.EOF:
            raise ConsoleError(
                f"{self.board.name}: QEMU exited while waiting for {pattern!r} "
                f"(see {self.console_log})"
            ) from None
        match = self.child.match
        assert isinstance(match, re.Match)
        return match

    def wait_for_ready(self, timeout: float = 240) -> float:
        """Wait until early boot is done and the console shell is up; returns seconds taken."""
        self.expect(re.escape(READY_LINE), timeout)
        if self.root_password is not None:
            self.expect(r"login: ", 60)
            self.child.sendline("root")
            self.expect(r"Password: ", 30)
            self.child.sendline(self.root_password)
        # The console shell starts after early boot, and input typed while getty and the shell
        # set up the terminal is dropped: knock (a harmless echo) until the shell answers.
        self.expect(r"[#$] ", 60)  # (ash may follow its prompt with a terminal query at once)
        deadline = time.monotonic() + 60 * self.factor
        while True:
            try:
                self.run("true", timeout=5)
                break
            except ConsoleError:
                if time.monotonic() > deadline:
                    raise
        return time.monotonic() - self.started_at

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        """Run a shell command on the console; its exit code comes back between markers."""
        token = secrets.token_hex(6)
        begin, end = f"K3PYBEGIN{token}", f"K3PYEND{token}"
        # The marker is split in the typed line, so the console's echo of it never matches.
        line = f"echo {begin[:6]}''{begin[6:]}; {command}; echo {end[:6]}''{end[6:]} $?"
        self.child.sendline(line)
        match = self.expect(f"(?s){begin}\\r*\\n(.*?){end} (\\d+)", timeout)
        output = match.group(1).replace("\r", "")
        return CommandResult(int(match.group(2)), output)

    def wait_until(self, command: str, timeout: float, interval: float = 2.0) -> float:
        """Repeat ``command`` until it exits 0; returns seconds since QEMU started."""
        deadline = time.monotonic() + timeout * self.factor
        last = CommandResult(-1, "")
        while time.monotonic() < deadline:
            last = self.run(command, timeout=60)
            if last.exit_code == 0:
                return time.monotonic() - self.started_at
            time.sleep(interval)
        raise ConsoleError(
            f"{self.board.name}: {command!r} still fails after {timeout * self.factor:.0f}s "
            f"(exit {last.exit_code}: {last.output.strip()[-300:]}; see {self.console_log})"
        )

    def stop(self) -> None:
        if self._child is not None:
            self._child.terminate(force=True)
            logfile = self._child.logfile_read
            if logfile is not None:
                logfile.close()
            self._child = None

    def __enter__(self) -> QemuBoard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
