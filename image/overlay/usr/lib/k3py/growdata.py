"""Grow the data partition (the card's last) to the end of the card, once, on first boot.

``sfdisk`` rewrites the partition table, but the kernel refuses to re-read the table of a disk
whose root partition is mounted; the BLKPG "resize partition" ioctl updates just the one
partition in the kernel (what ``resizepart`` does, without shipping util-linux for it). The file
system is then grown online by ``resize2fs``, so the partition may already be mounted.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import subprocess
import sys
from pathlib import Path

BLKPG = 0x1269
BLKPG_RESIZE_PARTITION = 3
SECTOR = 512


class BlkpgPartition(ctypes.Structure):
    _fields_ = (
        ("start", ctypes.c_longlong),
        ("length", ctypes.c_longlong),
        ("pno", ctypes.c_int),
        ("devname", ctypes.c_char * 64),
        ("volname", ctypes.c_char * 64),
    )


class BlkpgIoctlArg(ctypes.Structure):
    _fields_ = (
        ("op", ctypes.c_int),
        ("flags", ctypes.c_int),
        ("datalen", ctypes.c_int),
        ("data", ctypes.c_void_p),
    )


def sysfs_int(path: Path) -> int:
    return int(path.read_text().strip())


def main(argv: list[str]) -> int:
    partition = Path(argv[1]).name  # e.g. vda4, mmcblk0p4
    block = Path("/sys/class/block") / partition
    disk = block.resolve().parent.name
    number = sysfs_int(block / "partition")
    start = sysfs_int(block / "start")
    disk_sectors = sysfs_int(Path("/sys/class/block") / disk / "size")
    if start + sysfs_int(block / "size") >= disk_sectors - 2048:
        return 0  # already fills the card (to within sfdisk's 1 MiB alignment)
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", "-N", str(number), f"/dev/{disk}"],
        input=", +\n",
        text=True,
        check=True,
        capture_output=True,
    )
    table = subprocess.run(
        ["sfdisk", "-d", f"/dev/{disk}"], text=True, check=True, capture_output=True
    ).stdout
    line = next(entry for entry in table.splitlines() if entry.startswith(f"/dev/{partition} "))
    sectors = int(line.split("size=")[1].split(",")[0])
    entry = BlkpgPartition(start=start * SECTOR, length=sectors * SECTOR, pno=number)
    request = BlkpgIoctlArg(
        op=BLKPG_RESIZE_PARTITION,
        datalen=ctypes.sizeof(entry),
        data=ctypes.cast(ctypes.pointer(entry), ctypes.c_void_p),
    )
    fd = os.open(f"/dev/{disk}", os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKPG, request)
    finally:
        os.close(fd)
    subprocess.run(["resize2fs", f"/dev/{partition}"], check=True, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
