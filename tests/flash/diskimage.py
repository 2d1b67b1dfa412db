"""Test disk images made the way the image builder makes them, without loop devices.

A sparse file gets an MBR from ``sfdisk``, a FAT boot partition from ``mkfs.vfat --offset``
(with a ``config.txt`` copied in by mtools) and an ext4 root partition from ``mke2fs -d``
holding the given files. Used by the flash tests and the flash benchmark.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
SECTOR = 512
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


@dataclass(frozen=True)
class DiskImage:
    path: Path
    size: int
    boot_offset: int
    boot_size: int
    root_offset: int
    root_size: int
    files: dict[str, bytes]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, env=MTOOLS_ENV, timeout=120)


def build_image(
    path: Path, files: dict[str, bytes], *, size_mib: int = 64, boot_mib: int = 8
) -> DiskImage:
    """Make ``path``: MBR, FAT boot partition from 1 MiB, ext4 root partition after it."""
    boot_offset = MIB
    boot_size = boot_mib * MIB
    root_offset = boot_offset + boot_size
    root_size = size_mib * MIB - root_offset
    with path.open("wb") as image:
        image.truncate(size_mib * MIB)
    table = (
        "label: dos\nlabel-id: 0x6b337079\nunit: sectors\n\n"
        f"start={boot_offset // SECTOR}, size={boot_size // SECTOR}, type=c, bootable\n"
        f"start={root_offset // SECTOR}, size={root_size // SECTOR}, type=83\n"
    )
    subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)],
        input=table.encode(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    _run(
        # FAT16 with about 16k clusters fits the boot sizes used here; left to itself,
        # mkfs.vfat would size the file system for the whole image file.
        "mkfs.vfat", "-F", "16", "-s", str(1 << max(0, (boot_mib // 8).bit_length() - 1)),
        "--offset", str(boot_offset // SECTOR), "-n", "BOOT", "-i", "6b337079",
        str(path), str(boot_size // 1024),
    )  # fmt: skip
    config_txt = path.parent / f".{path.name}.config.txt"
    config_txt.write_text("arm_64bit=1\nkernel=vmlinuz\n")
    _run("mcopy", "-i", f"{path}@@{boot_offset}", str(config_txt), "::/config.txt")
    config_txt.unlink()
    root = path.parent / f".{path.name}.root"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    _run(
        "mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(root),
        "-E", f"offset={root_offset}", str(path), f"{root_size // 1024}k",
    )  # fmt: skip
    for name in files:
        (root / name).unlink()
    root.rmdir()
    return DiskImage(path, size_mib * MIB, boot_offset, boot_size, root_offset, root_size, files)


def read_span(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(size)


def fat_file(device: Path, offset: int, name: str) -> bytes | None:
    """A file from the FAT partition at ``offset`` of a device or image, or None if absent."""
    result = subprocess.run(
        ["mtype", "-i", f"{device}@@{offset}", f"::/{name}"],
        capture_output=True,
        env=MTOOLS_ENV,
        check=False,
        timeout=60,
    )
    return result.stdout if result.returncode == 0 else None


def ext4_file(image: Path, name: str) -> bytes:
    """A file from an ext4 file system image (a partition copied out to a file)."""
    result = subprocess.run(
        ["debugfs", "-R", f"cat /{name}", str(image)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout
