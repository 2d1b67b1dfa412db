"""The A/B boot state a board's U-Boot script and k3py share: slot order and attempt counters.

The state is RAUC's U-Boot triple, ``BOOT_ORDER`` ("A B" or "B A") and ``BOOT_A_LEFT`` /
``BOOT_B_LEFT`` (boot attempts left), plus ``K3PY_TRIAL``, the slot an update switched to that
has not yet proved itself (``none`` otherwise), kept in two copies on the FAT boot partition,
``k3pyenv.0`` and ``k3pyenv.1``, in U-Boot's checksummed ``env export -c`` format (a
little-endian CRC-32 of the rest, then ``name=value`` strings separated by NULs, padded). The
boot script (``image/uboot/boot-ab.cmd.j2``) reads the first copy whose checksum holds, counts
one attempt of the slot it picks down and writes both copies back; k3py here writes them in the
same order, each flushed to the card before the next, so a power cut tears at most one copy and
the other still holds a whole state (the first copy wins when both are whole).

Why not libubootenv's ``fw_setenv``: Debian's qemu U-Boot keeps its own environment in the
emulated NOR flash only, which a QEMU board would need as an extra per-board file, and a
Raspberry Pi has no such flash at all; a file on the boot partition works the same on all four
boards, and U-Boot reads and writes it with its stock ``fatload``/``env import``/``fatwrite``.
The format is a CRC and a list of strings, so the few lines here replace a C tool and its
configuration file. RAUC itself is not used: it wants D-Bus and a service manager with its own
mount handling, which the images' busybox init does not have.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from k3py.errors import K3pyError

ENV_SIZE = 0x1000  # bytes of each copy, CRC included (the script's ``env_size``)
ENV_FILES = ("k3pyenv.0", "k3pyenv.1")
ATTEMPTS = 3  # boots a slot gets before U-Boot falls back to the other one
SLOTS = ("a", "b")
BOOT_MOUNT = Path("/boot/firmware")


class BootEnvError(K3pyError):
    """The boot state cannot be read or written."""


def encode(variables: Mapping[str, str], size: int = ENV_SIZE) -> bytes:
    """``variables`` as U-Boot's ``env export -c -s size`` writes them."""
    data = b"".join(f"{name}={value}".encode() + b"\0" for name, value in sorted(variables.items()))
    data += b"\0"
    if len(data) > size - 4:
        raise BootEnvError(f"the boot state needs {len(data) + 4} bytes; a copy holds {size}")
    data = data.ljust(size - 4, b"\0")
    return struct.pack("<I", zlib.crc32(data)) + data


def decode(blob: bytes) -> dict[str, str] | None:
    """The variables of one copy, or None when its checksum does not hold (torn, empty)."""
    if len(blob) < 5:
        return None
    (crc,) = struct.unpack("<I", blob[:4])
    data = blob[4:]
    if zlib.crc32(data) != crc:
        return None
    variables: dict[str, str] = {}
    for item in data.split(b"\0"):
        if not item:
            break
        name, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            variables[name] = value
    return variables


@dataclass(frozen=True)
class State:
    order: tuple[str, ...]  # slot letters, first tried first ("a", "b")
    left: Mapping[str, int]  # attempts left per slot
    trial: str = ""  # the slot an update switched to, until it is marked good

    @classmethod
    def initial(cls) -> State:
        return cls(("a", "b"), {"a": ATTEMPTS, "b": ATTEMPTS})

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> State:
        order = tuple(s.lower() for s in variables.get("BOOT_ORDER", "A B").split()
                      if s.lower() in SLOTS)  # fmt: skip
        left = {}
        for slot in SLOTS:
            value = variables.get(f"BOOT_{slot.upper()}_LEFT", str(ATTEMPTS))
            left[slot] = int(value, 16) if re.fullmatch(r"[0-9a-fA-F]+", value) else 0
        trial = variables.get("K3PY_TRIAL", "none").lower()
        return cls(order or ("a", "b"), left, trial if trial in SLOTS else "")

    def variables(self) -> dict[str, str]:
        # U-Boot's setexpr writes hexadecimal; counters stay below 10, where both agree.
        return {"BOOT_ORDER": " ".join(s.upper() for s in self.order),
                **{f"BOOT_{s.upper()}_LEFT": str(self.left.get(s, 0)) for s in SLOTS},
                "K3PY_TRIAL": self.trial or "none"}  # fmt: skip

    def primary(self) -> str:
        """The slot U-Boot boots next (the first of the order with attempts left)."""
        return next((s for s in self.order if self.left.get(s, 0) > 0), self.order[0])


def initial_files() -> dict[str, bytes]:
    """The boot partition's copies for a new image: slot A first, full counters on both."""
    blob = encode(State.initial().variables())
    return dict.fromkeys(ENV_FILES, blob)


class BootEnv:
    """The boot state on a mounted boot partition (read-only mounted; remounted to write)."""

    def __init__(self, mount: Path = BOOT_MOUNT, *, remount: bool = True) -> None:
        self.mount, self.remount = mount, remount

    def available(self) -> bool:
        return all((self.mount / name).exists() for name in ENV_FILES)

    def read(self) -> State:
        for name in ENV_FILES:
            try:
                variables = decode((self.mount / name).read_bytes())
            except OSError:
                continue
            if variables is not None:
                return State.from_variables(variables)
        return State.initial()  # what the script assumes when neither copy is whole

    def write(self, state: State) -> None:
        blob = encode(state.variables())
        self._mount_mode("rw")
        try:
            for name in ENV_FILES:
                # Rewritten in place (same size, so the FAT keeps its clusters), then flushed:
                # the second copy is touched only once the first is on the card.
                with (self.mount / name).open("r+b" if (self.mount / name).exists() else "wb") as f:
                    f.write(blob)
                    f.truncate(len(blob))
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            self._mount_mode("ro")

    def _mount_mode(self, mode: str) -> None:
        if not self.remount:
            return
        result = subprocess.run(["mount", "-o", f"remount,{mode}", str(self.mount)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        if result.returncode != 0 and mode == "rw":
            raise BootEnvError(f"cannot remount {self.mount} {mode}: {result.stderr.strip()}")

    def mark_good(self, slot: str) -> bool:
        """The running ``slot`` is healthy: its counter back to full, its trial over (if it
        was on trial); whether anything changed."""
        state = self.read()
        trial = "" if state.trial == slot else state.trial
        if state.left.get(slot) == ATTEMPTS and trial == state.trial:
            return False
        self.write(State(state.order, {**state.left, slot: ATTEMPTS}, trial))
        return True

    def switch_to(self, slot: str, attempts: int = ATTEMPTS) -> None:
        """Boot ``slot`` next, on trial: for ``attempts`` boots unless one marks it good."""
        state = self.read()
        order = (slot, *[s for s in SLOTS if s != slot])
        self.write(State(order, {**state.left, slot: attempts}, slot))


def running_slot(cmdline: Path = Path("/proc/cmdline")) -> str:
    """The slot this system booted from (``k3py.slot=`` on the kernel command line)."""
    try:
        words = cmdline.read_text().split()
    except OSError:
        return "a"
    return next((w.split("=", 1)[1] for w in words if w.startswith("k3py.slot=")), "a")


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def slot_device(slot: str, running: str, mounts: Path = Path("/proc/mounts")) -> Path:
    """The block device of ``slot``: the root device's disk with the slot's partition number
    (2 for A, 3 for B: every board's sfdisk template puts them there)."""
    root = next((line.split()[0] for line in mounts.read_text().splitlines()
                 if line.split()[1:2] == ["/"] and line.startswith("/dev/")), None)  # fmt: skip
    if root is None:
        raise BootEnvError("the root file system is not on a block device")
    match = re.fullmatch(r"(.*?)(\d+)", root)
    if match is None or int(match.group(2)) != SLOTS.index(running) + 2:
        raise BootEnvError(f"the root device {root} is not slot {running.upper()}'s partition")
    return Path(f"{match.group(1)}{SLOTS.index(slot) + 2}")
