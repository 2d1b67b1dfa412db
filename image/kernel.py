"""The board's Debian kernel: modules pruned to what the board and the cluster need, ``depmod``
run on the build host, and a small initramfs we generate ourselves.

Debian builds virtio, ext4, VXLAN, IP_VS, overlayfs and friends as modules, so the root file
system on a virtio disk needs an initramfs that loads them. Ours is busybox-static plus those
modules (decompressed, listed in dependency order) and a short ``/init`` that loads them, waits
for the root device, mounts it read-only and switches to busybox init there. The cpio archive
is written here, deterministically (fixed inodes, owners and times), no initramfs-tools involved.
"""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from k3py.image.errors import ImageError, command_failed

INIT_SCRIPT = Path(str(resources.files("k3py.image").joinpath("initramfs-init")))
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class KernelTree:
    """An unpacked kernel package: version, image, config, modules and device trees."""

    root: Path
    version: str

    @property
    def modules_dir(self) -> Path:
        return self.root / "usr/lib/modules" / self.version

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def config(self) -> Path:
        return self.root / "boot" / f"config-{self.version}"

    @property
    def dtb_dir(self) -> Path:
        return self.root / "usr/lib" / f"linux-image-{self.version}"


def find_kernel(root: Path) -> KernelTree:
    versions = sorted(p.name for p in (root / "usr/lib/modules").glob("*") if p.is_dir())
    if len(versions) != 1:
        raise ImageError(f"expected one kernel in {root}/usr/lib/modules, found {versions}")
    tree = KernelTree(root, versions[0])
    for needed in (tree.vmlinuz, tree.config):
        if not needed.exists():
            raise ImageError(f"the kernel package has no {needed.relative_to(root)}")
    return tree


def module_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def depmod(base: Path, version: str) -> None:
    argv = ["depmod", "-a", "-b", str(base), version]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise command_failed(argv, result.returncode, result.stdout + result.stderr)


def read_dependencies(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """``modules.dep`` as name → (relative path, paths it depends on)."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        table[module_name(path)] = (path, deps.split())
    return table


def builtin_modules(modules_dir: Path) -> set[str]:
    builtin = modules_dir / "modules.builtin"
    if not builtin.exists():
        return set()
    return {module_name(line) for line in builtin.read_text().splitlines() if line}


def closure(table: dict[str, tuple[str, list[str]]], wanted: Iterable[str]) -> list[str]:
    """Module paths for ``wanted`` and everything they need, dependencies before dependants."""
    by_path = dict(table.values())
    ordered: list[str] = []

    def visit(path: str) -> None:
        if path in ordered:
            return
        for dep in by_path.get(path, []):
            visit(dep)
        ordered.append(path)

    for name in wanted:
        entry = table.get(name.replace("-", "_"))
        if entry is not None:
            visit(entry[0])
    return ordered


def install_modules(
    kernel: KernelTree, rootfs: Path, wanted: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Copy the closure of ``wanted`` into the root file system and run ``depmod`` there.

    Returns (kept module paths, wanted names that are neither modules nor built in).
    """
    depmod(kernel.root, kernel.version)
    table = read_dependencies(kernel.modules_dir)
    wanted = sorted(set(wanted))
    builtin = builtin_modules(kernel.modules_dir)
    known = set(table) | builtin
    unavailable = [n for n in wanted if n.replace("-", "_") not in known]
    kept = closure(table, wanted)
    target = rootfs / "usr/lib/modules" / kernel.version
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (kernel.modules_dir / name).exists():
            shutil.copy2(kernel.modules_dir / name, target / name)
    for path in kept:
        # Stored uncompressed: busybox's modprobe unpacks an .xz module in user space, which
        # cost an emulated board seconds of its boot for the few dozen modules it loads (the
        # kept set is a few MB either way). And without Debian's signature: the kernel checks
        # one at every load (RSA-4096 and a digest of the module), which was about two thirds
        # of a module's load on an emulated ARMv7 board (3 s of its boot for the initramfs'
        # and the early boot's modules). The boards do not enforce signatures (no lockdown
        # without Secure Boot), so nothing is refused; the packages the modules come from are
        # checked at fetch. The kernel notes an unsigned module in its taint flags ("E").
        plain = target / (path[: path.rindex(".ko") + 3])
        plain.parent.mkdir(parents=True, exist_ok=True)
        plain.write_bytes(_decompressed(kernel.modules_dir / path))
    boot = rootfs / "boot"
    boot.mkdir(exist_ok=True)
    shutil.copy2(kernel.config, boot / kernel.config.name)
    depmod(rootfs, kernel.version)
    return kept, unavailable


def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return unsigned(data)


SIGNATURE_MAGIC = b"~Module signature appended~\n"
SIGNATURE_INFO = 12  # struct module_signature: 5 one-byte fields, 3 bytes padding, __be32 sig_len


def unsigned(module: bytes) -> bytes:
    """The module without the signature appended to it (``scripts/sign-file``'s layout:
    module, signature, ``struct module_signature``, magic); a module without one as it is."""
    if not module.endswith(SIGNATURE_MAGIC):
        return module
    end = len(module) - len(SIGNATURE_MAGIC)
    (length,) = struct.unpack(">I", module[end - 4 : end])
    start = end - SIGNATURE_INFO - length
    if start < 0:
        return module
    return module[:start]


class CpioWriter:
    """A ``newc`` cpio archive with fixed inode numbers, owners and times."""

    def __init__(self, mtime: int) -> None:
        self.out = io.BytesIO()
        self.mtime = mtime
        self.inode = 300000

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1) -> None:
        self.inode += 1
        fields = [self.inode, mode, 0, 0, nlink, self.mtime, len(data), 0, 0, 0, 0]
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(f"{f:08x}" for f in fields)
        header += f"{len(encoded):08x}{0:08x}"
        self.out.write(header.encode() + encoded)
        self.out.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def build_initramfs(
    kernel: KernelTree, busybox: Path, modules: Iterable[str], target: Path, epoch: int
) -> list[str]:
    """Write a gzip'd cpio initramfs that can mount the board's root; returns its modules."""
    table = read_dependencies(kernel.modules_dir)
    builtin = builtin_modules(kernel.modules_dir)
    wanted = list(modules)
    missing = [m for m in wanted if m.replace("-", "_") not in table and m not in builtin]
    if missing:
        raise ImageError(
            f"the initramfs needs kernel modules {', '.join(missing)}, which kernel "
            f"{kernel.version} neither ships nor builds in (check kernel.initramfs_modules)"
        )
    ordered = closure(table, wanted)
    cpio = CpioWriter(epoch)
    for directory in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        cpio.directory(directory)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    names = []
    for path in ordered:
        name = module_name(path) + ".ko"
        names.append(name)
        cpio.file(f"lib/modules/{name}", _decompressed(kernel.modules_dir / path))
    cpio.file("lib/modules/load-order", "".join(f"{n}\n" for n in names).encode())
    target.write_bytes(gzip.compress(cpio.finish(), compresslevel=9, mtime=0))
    return names
