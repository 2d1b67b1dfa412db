"""The pod sandbox's image, made on the node: a root filesystem holding one tiny ``/pause``.

A sandbox only has to exist: it holds the pod's network namespace while the pod's containers
come and go. Kubernetes uses the ``pause`` image for that; boards may have no registry, so the
agent builds its own when the engine lacks it. ``/pause`` is a static ELF of a few dozen bytes
for the node's architecture that waits for signals forever (``pause(2)``, or ``ppoll(2)`` with
nothing to poll on arm64, which has no ``pause``); as PID 1 of its namespace it ignores SIGTERM,
so the agent removes sandboxes with SIGKILL.
"""

from __future__ import annotations

import io
import platform
import struct
import tarfile

PAUSE_IMAGE = "k3py/pause:1"

# Machine code of "loop: wait-for-signal syscall; jump loop", per architecture.
_X86_64 = bytes.fromhex("b8220000000f05ebf7")  # mov eax,34 (pause); syscall; jmp loop
_AARCH64 = struct.pack(
    "<7I",
    0xD2800000,  # mov x0, #0     fds = NULL
    0xD2800001,  # mov x1, #0     nfds = 0
    0xD2800002,  # mov x2, #0     timeout = NULL (forever)
    0xD2800003,  # mov x3, #0     sigmask = NULL
    0xD2800928,  # mov x8, #73    ppoll
    0xD4000001,  # svc #0
    0x17FFFFFA,  # b loop
)
_ARM = struct.pack(
    "<3I",
    0xE3A0701D,  # mov r7, #29    pause
    0xEF000000,  # svc #0
    0xEAFFFFFC,  # b loop
)


def _elf64(machine: int, code: bytes) -> bytes:
    base = 0x400000
    header_size, phdr_size = 64, 56
    entry = base + header_size + phdr_size
    total = header_size + phdr_size + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,
        machine,
        1,
        entry,
        header_size,
        0,
        0,
        header_size,
        phdr_size,
        1,
        0,
        0,
        0,
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)
    return header + program + code


def _elf32_arm(code: bytes) -> bytes:
    base = 0x10000
    header_size, phdr_size = 52, 32
    entry = base + header_size + phdr_size
    total = header_size + phdr_size + len(code)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIIIIIHHHHHH",
        2,
        40,
        1,
        entry,
        header_size,
        0,
        0x05000000,
        header_size,
        phdr_size,
        1,
        0,
        0,
        0,
    )
    program = struct.pack("<IIIIIIII", 1, 0, base, base, total, total, 5, 0x1000)
    return header + program + code


def pause_binary(machine: str | None = None) -> bytes:
    """The ``/pause`` ELF for a machine name as ``uname -m`` reports it."""
    machine = machine or platform.machine()
    if machine in {"x86_64", "amd64"}:
        return _elf64(62, _X86_64)
    if machine in {"aarch64", "arm64"}:
        return _elf64(183, _AARCH64)
    if machine.startswith("arm"):
        return _elf32_arm(_ARM)
    raise ValueError(f"no pause binary for machine {machine!r}")


def pause_rootfs(machine: str | None = None) -> bytes:
    """A tar of the sandbox image's root filesystem (for ``docker import``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = pause_binary(machine)
        info = tarfile.TarInfo("pause")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
