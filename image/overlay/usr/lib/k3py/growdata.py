"""Grow the data partition (the card's last) to the end of the card, once, on first boot.

The card's partition table is an MBR (``partitions.sfdisk.j2``: boot, root A, root B, data, all
primary), so growing the last partition is one entry of sector 0: its sector count (and CHS end),
written here byte for byte as ``sfdisk -N 4`` with ``, +`` writes it (the end at the card's last
whole MiB). sfdisk ran twice before (to write, then to read the size back), with ``subprocess``
and ``ctypes`` imported for it: the ARMv7 board's boot configuration, which runs this, took
2.19 / 2.47 / 2.20 s on a first boot that grew the partition by 512 MiB, 1.94 / 2.17 / 1.83 s
without them (interleaved boots). The kernel refuses to re-read the table of a disk whose root
partition is mounted; the BLKPG "resize partition" ioctl updates just the one partition in the
kernel (what ``resizepart`` does, without shipping util-linux for it). The file system is then
grown online by ``resize2fs``, so the partition may already be mounted.
"""

from __future__ import annotations

import array
import fcntl
import os
import struct
import sys
from pathlib import Path

BLKPG = 0x1269
BLKPG_RESIZE_PARTITION = 3
SECTOR = 512
GRAIN = 2048  # sectors: 1 MiB, sfdisk's alignment
MBR_ENTRIES = 446  # offset of the four 16-byte primary entries in sector 0
MBR_SIGNATURE = b"\x55\xaa"
HEADS, TRACK = 255, 63  # the geometry the image's table was written with (sfdisk on a file)


def _chs(sector: int) -> bytes:
    """A sector's cylinder/head/sector triple as an MBR entry stores it (no BIOS reads it)."""
    cylinder, rest = divmod(sector, HEADS * TRACK)
    if cylinder > 1023:
        return b"\xfe\xff\xff"  # beyond CHS: the usual "use the LBA" marker
    head, track_sector = divmod(rest, TRACK)
    return bytes((head, track_sector + 1 | (cylinder >> 8) << 6, cylinder & 0xFF))


def sysfs_int(path: Path) -> int:
    return int(path.read_text().strip())


def _write_entry(disk: str, number: int, start: int, sectors: int) -> None:
    """Primary entry ``number`` of the MBR of ``/dev/disk``: ``sectors`` long from ``start``."""
    if not 1 <= number <= 4:
        raise ValueError(f"partition {number} is not a primary partition of an MBR")
    fd = os.open(f"/dev/{disk}", os.O_RDWR | os.O_SYNC)
    try:
        mbr = bytearray(os.pread(fd, SECTOR, 0))
        if mbr[510:512] != MBR_SIGNATURE:
            raise ValueError(f"/dev/{disk} has no MBR partition table")
        at = MBR_ENTRIES + 16 * (number - 1)
        (first,) = struct.unpack_from("<I", mbr, at + 8)
        if first != start or mbr[at + 4] in (0x00, 0x05, 0x0F, 0x85, 0xEE):
            raise ValueError(f"entry {number} of /dev/{disk}'s MBR is not the data partition")
        mbr[at + 5 : at + 8] = _chs(start + sectors - 1)
        struct.pack_into("<I", mbr, at + 12, sectors)
        os.pwrite(fd, bytes(mbr), 0)
    finally:
        os.close(fd)


def _resize_in_kernel(disk: str, number: int, start: int, sectors: int) -> None:
    # struct blkpg_partition, then struct blkpg_ioctl_arg pointing at it (linux/blkpg.h).
    partition = array.array("B", struct.pack("qqi64s64s", start * SECTOR, sectors * SECTOR,
                                             number, b"", b""))  # fmt: skip
    address, _ = partition.buffer_info()
    request = struct.pack("iiiP", BLKPG_RESIZE_PARTITION, 0, len(partition), address)
    fd = os.open(f"/dev/{disk}", os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKPG, request)
    finally:
        os.close(fd)


def _run(argv: list[str]) -> None:
    """``argv`` with its output discarded; an error names the program and its exit code."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)]
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
    finally:
        os.close(null)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        raise OSError(f"{argv[0]} exited with {code}")


def main(argv: list[str]) -> int:
    partition = Path(argv[1]).name  # e.g. vda4, mmcblk0p4
    block = Path("/sys/class/block") / partition
    disk = block.resolve().parent.name
    number = sysfs_int(block / "partition")
    start = sysfs_int(block / "start")
    disk_sectors = sysfs_int(Path("/sys/class/block") / disk / "size")
    end = disk_sectors // GRAIN * GRAIN  # the last whole MiB, as sfdisk places it
    if start + sysfs_int(block / "size") >= end:
        return 0  # already fills the card
    sectors = min(end, 2**32 - 1) - start  # an MBR counts sectors in 32 bits
    _write_entry(disk, number, start, sectors)
    _resize_in_kernel(disk, number, start, sectors)
    _run(["resize2fs", f"/dev/{partition}"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
