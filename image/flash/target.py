"""The card being written: what it is, whether it is safe to overwrite, and opening it.

A target is described from sysfs and procfs (model, size, serial, transport, partitions, the
devices stacked on it, and where any of them is mounted or used as swap) by :class:`HostSystem`,
whose roots are parameters so tests describe fake machines. :func:`check_target` is the safety
policy: a system disk, a mounted or swapping device, a partition, or a fixed (not removable, USB,
MMC or loop) disk is refused unless forced; a read-only or too small device always is.
:class:`TargetHandle` opens it exclusively (``O_EXCL``) with direct I/O where possible, so
read-back verification sees the device rather than the page cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from k3py.image.bmap import human_size
from k3py.image.flash.errors import FlashError

# Mount points whose device is the running system; never a card to overwrite.
SYSTEM_MOUNTS = frozenset({"/", "/boot", "/boot/efi", "/boot/firmware", "/usr", "/var"})
_BLKSSZGET = 0x1268
_BLKRRPART = 0x125F
_DEFAULT_ALIGNMENT = 4096


@dataclass(frozen=True)
class Mount:
    device: str  # kernel name of the mounted device, e.g. sdb1
    mountpoint: str


@dataclass(frozen=True)
class BlockDevice:
    """A block device as the kernel describes it."""

    name: str
    size: int
    model: str
    serial: str
    transport: str  # usb, mmc, loop, or fixed
    removable: bool
    read_only: bool
    logical_block_size: int
    partition_of: str | None = None
    mounts: tuple[Mount, ...] = ()
    swaps: tuple[str, ...] = ()

    def describe(self, path: Path) -> str:
        kind = "removable " + self.transport if self.removable else self.transport
        return (
            f"{path}: {self.model or 'unknown model'}, {human_size(self.size)}, "
            f"serial {self.serial or 'unknown'} ({kind})"
        )


@dataclass(frozen=True)
class TargetInfo:
    """A flash target: a block device, or a regular image file when files are allowed."""

    path: Path
    device: BlockDevice | None  # None for a regular file
    exists: bool = True
    same_as_image: bool = field(default=False)

    def describe(self) -> str:
        if self.device is None:
            return f"{self.path}: regular file"
        return self.device.describe(self.path)


def _unescape(text: str) -> str:
    """mountinfo and swaps escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


class HostSystem:
    """Reads block-device facts from sysfs, procfs and udev's database under the given roots."""

    def __init__(
        self,
        sys_root: Path = Path("/sys"),
        proc_root: Path = Path("/proc"),
        udev_root: Path = Path("/run/udev/data"),
    ) -> None:
        self.sys_root = sys_root
        self.proc_root = proc_root
        self.udev_root = udev_root

    def _read(self, path: Path, default: str = "") -> str:
        try:
            return path.read_text(errors="replace").strip()
        except OSError:
            return default

    def _class_dir(self, name: str) -> Path:
        return self.sys_root / "class" / "block" / name

    def name_of(self, major: int, minor: int) -> str:
        link = self.sys_root / "dev" / "block" / f"{major}:{minor}"
        if not link.exists():
            raise FlashError(f"device {major}:{minor} is not a known block device")
        return link.resolve().name

    def partitions(self, name: str) -> list[str]:
        base = self._class_dir(name)
        try:
            children = sorted(base.resolve().iterdir())
        except OSError:
            return []
        return [c.name for c in children if (c / "partition").exists()]

    def stacked(self, name: str) -> set[str]:
        """The device, its partitions, and every device built on them (dm, md), recursively."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(self.partitions(current))
            holders = self._class_dir(current) / "holders"
            if holders.is_dir():
                todo.extend(h.name for h in holders.iterdir())
        return seen

    def _devno_name(self, spec: str) -> str | None:
        major, _, minor = spec.partition(":")
        link = self.sys_root / "dev" / "block" / f"{major}:{minor}"
        return link.resolve().name if link.exists() else None

    def _path_name(self, path: str) -> str | None:
        """Kernel name of a /dev path: by its device number, else by its file name."""
        try:
            info = os.stat(path)
        except OSError:
            return Path(path).name if path.startswith("/dev/") else None
        if stat.S_ISBLK(info.st_mode):
            return self._devno_name(f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}")
        return None

    def mounts(self) -> list[Mount]:
        found: list[Mount] = []
        text = self._read(self.proc_root / "self" / "mountinfo")
        for line in text.splitlines():
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) < 5 or len(tail) < 2:
                continue
            mountpoint = _unescape(fields[4])
            names = {self._devno_name(fields[2]), self._path_name(_unescape(tail[1]))}
            found.extend(Mount(n, mountpoint) for n in names if n)
        return found

    def swaps(self) -> list[str]:
        lines = self._read(self.proc_root / "swaps").splitlines()[1:]
        names = (self._path_name(_unescape(line.split()[0])) for line in lines if line.split())
        return [n for n in names if n]

    def _serial(self, name: str, devno: str) -> str:
        for line in self._read(self.udev_root / f"b{devno}").splitlines():
            if line.startswith("E:ID_SERIAL_SHORT="):
                return line.partition("=")[2]
        return self._read(self._class_dir(name) / "device" / "serial")

    def describe(self, name: str) -> BlockDevice:
        base = self._class_dir(name)
        if not base.exists():
            raise FlashError(f"{name} is not a block device known to this kernel")
        real = str(base.resolve())
        partition_of = base.resolve().parent.name if (base / "partition").exists() else None
        disk = partition_of or name
        disk_dir = self._class_dir(disk)
        if disk.startswith("loop"):
            transport = "loop"
            backing = self._read(disk_dir / "loop" / "backing_file")
            model = f"loop device on {backing}" if backing else "loop device"
        else:
            transport = "usb" if "/usb" in real else "mmc" if disk.startswith("mmcblk") else "fixed"
            vendor = self._read(disk_dir / "device" / "vendor")
            product = self._read(disk_dir / "device" / "model") or self._read(
                disk_dir / "device" / "name"
            )
            model = " ".join(part for part in (vendor, product) if part)
        members = self.stacked(name)
        return BlockDevice(
            name=name,
            size=int(self._read(base / "size", "0") or 0) * 512,
            model=model,
            serial=self._serial(disk, self._read(disk_dir / "dev")),
            transport=transport,
            removable=self._read(disk_dir / "removable") == "1",
            read_only=self._read(base / "ro") == "1",
            logical_block_size=int(
                self._read(disk_dir / "queue" / "logical_block_size", "512") or 512
            ),
            partition_of=partition_of,
            mounts=tuple(m for m in self.mounts() if m.device in members),
            swaps=tuple(s for s in self.swaps() if s in members),
        )

    def inspect(self, path: Path, *, image: Path | None = None) -> TargetInfo:
        """Describe ``path``: a block device through sysfs, or a regular (maybe new) file."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return TargetInfo(path, None, exists=False)
        except OSError as err:
            raise FlashError(f"cannot look at target {path}: {err.strerror}") from None
        if stat.S_ISBLK(info.st_mode):
            name = self.name_of(os.major(info.st_rdev), os.minor(info.st_rdev))
            return TargetInfo(path, self.describe(name))
        if stat.S_ISREG(info.st_mode):
            same = image is not None and image.exists() and os.path.samefile(image, path)
            return TargetInfo(path, None, same_as_image=same)
        raise FlashError(f"target {path} is neither a block device nor a regular file")


def check_target(target: TargetInfo, image_size: int, *, allow_file: bool, force: bool) -> None:
    """Refuse a target that is unsafe or unfit; ``force`` lifts only the safety refusals."""
    path = target.path
    device = target.device
    if device is None:
        if not target.exists and not allow_file:
            raise FlashError(
                f"target {path} does not exist; name the card's device (see lsblk), "
                "or pass --allow-file to write an image file"
            )
        if not allow_file:
            raise FlashError(
                f"target {path} is a regular file, not a block device; pass --allow-file to "
                "write the image into a file"
            )
        if target.same_as_image:
            raise FlashError(f"target {path} is the image itself")
        return
    if device.read_only:
        raise FlashError(f"{path} is read-only; check the card's write-protect switch")
    if device.size == 0:
        raise FlashError(f"{path} has no medium (size 0); insert the card and retry")
    if device.size < image_size:
        raise FlashError(
            f"{path} is too small for the image: {human_size(device.size)} "
            f"({device.size} bytes) < {human_size(image_size)} ({image_size} bytes); "
            "use a larger card"
        )
    refusals: list[str] = []
    system = sorted({m.mountpoint for m in device.mounts if m.mountpoint in SYSTEM_MOUNTS})
    if system:
        refusals.append(f"it holds the running system (mounted at {', '.join(system)})")
    others = [m for m in device.mounts if m.mountpoint not in SYSTEM_MOUNTS]
    if others:
        shown = ", ".join(f"/dev/{m.device} on {m.mountpoint}" for m in others[:3])
        refusals.append(f"it has mounted file systems ({shown}); unmount them first")
    if device.swaps:
        refusals.append(f"it is in use as swap ({', '.join(device.swaps)})")
    if device.partition_of is not None:
        refusals.append(f"it is a partition of /dev/{device.partition_of}; flash the whole device")
    if not (device.removable or device.transport in {"usb", "mmc", "loop"}):
        refusals.append("it is a fixed disk, not a removable, USB, MMC or loop device")
    if refusals and not force:
        raise FlashError(
            f"refusing to write {path}: {'; '.join(refusals)} (--force overrides this check)"
        )


class TargetHandle:
    """The target opened for writing: exclusively, with direct I/O when the target allows it.

    Writes and reads whose offset and length are multiples of the device's logical block size
    go through an ``O_DIRECT`` descriptor, which bypasses the page cache; anything else (an
    image size that is not a multiple of it, or file systems without direct I/O) goes through
    a buffered descriptor whose cache is dropped before reading back.
    """

    def __init__(self, target: TargetInfo, image_size: int) -> None:
        self.path = target.path
        self.is_file = target.device is None
        self.direct_fd = -1
        self.buffered_fd = -1
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            if self.is_file:
                self.buffered_fd = os.open(self.path, flags | os.O_CREAT, 0o644)
                # A file target becomes exactly the image: unmapped ranges read as zeros.
                os.ftruncate(self.buffered_fd, 0)
                os.ftruncate(self.buffered_fd, image_size)
                self.alignment = _DEFAULT_ALIGNMENT
                self.size = image_size
            else:
                self.buffered_fd = os.open(self.path, flags | os.O_EXCL)
                packed = fcntl.ioctl(self.buffered_fd, _BLKSSZGET, struct.pack("i", 0))
                self.alignment = max(512, struct.unpack("i", packed)[0])
                self.size = os.lseek(self.buffered_fd, 0, os.SEEK_END)
        except OSError as err:
            self.close()
            raise _open_error(self.path, err) from None
        try:
            self.direct_fd = os.open(self.path, flags | os.O_DIRECT)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                self.close()
                raise _open_error(self.path, err) from None

    @property
    def direct(self) -> bool:
        return self.direct_fd >= 0

    def _aligned(self, offset: int, length: int) -> bool:
        return self.direct and offset % self.alignment == 0 and length % self.alignment == 0

    def write(self, offset: int, data: memoryview) -> None:
        fd = self.direct_fd if self._aligned(offset, len(data)) else self.buffered_fd
        done = 0
        while done < len(data):
            try:
                written = os.pwrite(fd, data[done:], offset + done)
            except OSError as err:
                raise FlashError(
                    f"writing {self.path} failed at byte {offset + done}: {err.strerror}; "
                    "the card holds a partly written image"
                ) from None
            if written == 0:
                raise FlashError(
                    f"{self.path} accepted no more data at byte {offset + done}; the card "
                    "holds a partly written image"
                )
            done += written

    def read(self, offset: int, length: int, buffer: mmap.mmap) -> int:
        """Read ``length`` bytes at ``offset`` into ``buffer`` (page aligned); return the count.

        Fewer bytes come back only at the end of the target.
        """
        padded = -(-length // self.alignment) * self.alignment
        use_direct = self.direct and offset % self.alignment == 0 and padded <= len(buffer)
        fd = self.direct_fd if use_direct else self.buffered_fd
        want = padded if use_direct else length
        done = 0
        with memoryview(buffer) as view:
            try:
                while done < length:
                    count = os.preadv(fd, [view[done:want]], offset + done)
                    done += count
                    # A short direct read means the end; retrying would be unaligned.
                    if count == 0 or (use_direct and count % self.alignment):
                        break
            except OSError as err:
                raise FlashError(
                    f"reading back {self.path} failed at byte {offset + done}: {err.strerror}"
                ) from None
        return min(done, length)

    def sync(self) -> None:
        """Flush written data to the medium and forget cached pages of the target."""
        try:
            for fd in (self.buffered_fd, self.direct_fd):
                if fd >= 0:
                    os.fsync(fd)
            os.posix_fadvise(self.buffered_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as err:
            raise FlashError(f"syncing {self.path} failed: {err.strerror}") from None

    def reread_partitions(self) -> None:
        """Ask the kernel to reread the new partition table (best effort; cards may refuse)."""
        if not self.is_file:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.buffered_fd, _BLKRRPART)

    def close(self) -> None:
        for fd in (self.direct_fd, self.buffered_fd):
            if fd >= 0:
                os.close(fd)
        self.direct_fd = self.buffered_fd = -1


def _open_error(path: Path, err: OSError) -> FlashError:
    if err.errno == errno.EBUSY:
        return FlashError(
            f"{path} is in use (mounted, or held by another program); unmount it and retry"
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return FlashError(f"no permission to write {path}; run as root (or in group disk)")
    if err.errno == errno.EROFS:
        return FlashError(f"{path} is read-only; check the card's write-protect switch")
    return FlashError(f"cannot open {path} for writing: {err.strerror}")
