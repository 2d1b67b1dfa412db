"""Board descriptions: the one loader and validator of ``board/<name>/board.toml``.

A board is data (Buildroot's ``board/`` folder): architecture, kernel package and device trees,
boot method, console, partition layout template, kernel command line and, for emulated boards,
the QEMU invocation. :func:`load_board` turns one file into a frozen :class:`Board`; every
mistake is a :class:`~k3py.image.errors.BoardError` naming the file and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from k3py.image.errors import BoardError

# Installed packages are directories (k3py is not zip-safe), so the resource is a real path.
BOARDS_DIR = Path(str(resources.files("k3py.board")))

# Debian architecture → what the ELF audit and QEMU expect of it.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "arm64": {"elf_class": 64, "elf_machine": "EM_AARCH64", "triplet": "aarch64-linux-gnu"},
    "armhf": {"elf_class": 32, "elf_machine": "EM_ARM", "triplet": "arm-linux-gnueabihf"},
}
BOOT_METHODS = ("qemu-direct", "raspberrypi", "u-boot")


@dataclass(frozen=True)
class Kernel:
    package: str
    device_trees: tuple[str, ...]
    modules: tuple[str, ...]
    initramfs_modules: tuple[str, ...]
    cmdline: str


@dataclass(frozen=True)
class Boot:
    method: str
    firmware_package: str
    firmware_files: tuple[str, ...]
    templates: Mapping[str, str]  # boot partition file name → template file in the board folder
    device: str = "virtio 0"  # u-boot: the U-Boot device holding the card ("mmc 0" on a Pi)
    # u-boot on a Pi: the package holding U-Boot and which of its files go onto the boot
    # partition (boot partition name → path inside the package).
    loader_package: str = "none"
    loader_files: Mapping[str, str] = field(default_factory=dict)
    # u-boot: the device tree address the boot script hands to booti/bootz (QEMU's and the Pi
    # firmware's trees differ), and U-Boot variables it sets before loading (load addresses).
    fdt: str = "${fdtcontroladdr}"
    script_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Partitions:
    template: str
    boot_mib: int
    root_min_mib: int
    data_mib: int


@dataclass(frozen=True)
class Qemu:
    binary: str
    machine: str
    cpu: str
    memory_mib: int
    args: tuple[str, ...]


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    architecture: str
    console: str
    kernel: Kernel
    boot: Boot
    partitions: Partitions
    qemu: Qemu | None
    directory: Path

    @property
    def triplet(self) -> str:
        return str(ARCHITECTURES[self.architecture]["triplet"])

    @property
    def elf_class(self) -> int:
        return int(ARCHITECTURES[self.architecture]["elf_class"])

    @property
    def elf_machine(self) -> str:
        return str(ARCHITECTURES[self.architecture]["elf_machine"])


class _Table:
    """Typed access to one TOML table; every error names the file and the dotted key."""

    def __init__(self, file: Path, data: Mapping[str, Any], prefix: str) -> None:
        self.file, self.data, self.prefix = file, data, prefix

    def _fail(self, key: str, what: str) -> BoardError:
        return BoardError(f"{self.file}: key '{self.prefix}{key}': {what}")

    def table(self, key: str, *, required: bool = True) -> _Table | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self._fail(key, "missing table")
            return None
        if not isinstance(value, dict):
            raise self._fail(key, "expected a table")
        return _Table(self.file, value, f"{self.prefix}{key}.")

    def string(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise self._fail(key, "missing (expected a string)")
        if not isinstance(value, str) or not value:
            raise self._fail(key, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self._fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, minimum: int = 0) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self._fail(key, f"expected at least {minimum}, got {value}")
        return int(value)

    def strings(self, key: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self.data.get(key, default)
        if value is None:
            raise self._fail(key, "missing (expected a list of strings)")
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.data.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._fail(key, "expected a table of strings")
        return dict(value)

    def reject_unknown(self, known: set[str]) -> None:
        for key in sorted(set(self.data) - known):
            raise self._fail(key, f"unknown key (known: {', '.join(sorted(known))})")


def board_path(name_or_path: str | Path) -> Path:
    """``qemu-virt-arm64`` → ``board/qemu-virt-arm64/board.toml``; a path is taken as given."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        return candidate
    if candidate.is_dir():
        return candidate / "board.toml"
    return BOARDS_DIR / str(name_or_path) / "board.toml"


def available_boards() -> list[str]:
    return sorted(p.parent.name for p in BOARDS_DIR.glob("*/board.toml"))


def load_board(name_or_path: str | Path) -> Board:
    """Read and validate one board description."""
    file = board_path(name_or_path)
    if not file.is_file():
        known = ", ".join(available_boards()) or "none"
        raise BoardError(f"no board description at {file} (known boards: {known})")
    try:
        data = tomllib.loads(file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise BoardError(f"{file}: not valid TOML: {err}") from None
    top = _Table(file, data, "")
    top.reject_unknown({"board", "kernel", "boot", "partitions", "qemu"})

    meta = top.table("board")
    assert meta is not None
    meta.reject_unknown({"name", "description", "architecture", "console"})
    name = meta.string("name")
    if name != file.parent.name:
        raise BoardError(
            f"{file}: key 'board.name': {name!r} must match the folder name {file.parent.name!r}"
        )
    architecture = meta.string("architecture", choices=tuple(ARCHITECTURES))

    kernel = top.table("kernel")
    assert kernel is not None
    kernel.reject_unknown({"package", "device_trees", "modules", "initramfs_modules", "cmdline"})
    boot = top.table("boot")
    assert boot is not None
    boot.reject_unknown({"method", "firmware_package", "firmware_files", "templates", "device",
                         "loader_package", "loader_files", "fdt", "script_env"})  # fmt: skip
    method = boot.string("method", choices=BOOT_METHODS)
    templates = boot.string_map("templates")
    for target, template in templates.items():
        if not (file.parent / template).is_file():
            raise BoardError(
                f"{file}: key 'boot.templates.{target}': template {template} does not exist"
            )
    parts = top.table("partitions")
    assert parts is not None
    parts.reject_unknown({"template", "boot_mib", "root_min_mib", "data_mib"})
    template = parts.string("template")
    if not (file.parent / template).is_file():
        raise BoardError(f"{file}: key 'partitions.template': {template} does not exist")

    qemu_table = top.table("qemu", required=False)
    qemu: Qemu | None = None
    if qemu_table is not None:
        qemu_table.reject_unknown({"binary", "machine", "cpu", "memory_mib", "args"})
        qemu = Qemu(
            binary=qemu_table.string("binary"),
            machine=qemu_table.string("machine"),
            cpu=qemu_table.string("cpu"),
            memory_mib=qemu_table.integer("memory_mib", 512, minimum=64),
            args=qemu_table.strings("args", ()),
        )
    if method == "qemu-direct" and qemu is None:
        raise BoardError(f"{file}: key 'qemu': boot method qemu-direct needs a [qemu] table")
    firmware_package = boot.string("firmware_package", "none")
    if method == "raspberrypi" and firmware_package == "none":
        raise BoardError(f"{file}: key 'boot.firmware_package': the raspberrypi method needs it")
    if boot.data.get("loader_files") and boot.data.get("loader_package", "none") == "none":
        raise BoardError(f"{file}: key 'boot.loader_package': boot.loader_files needs it")

    return Board(
        name=name,
        description=meta.string("description"),
        architecture=architecture,
        console=meta.string("console"),
        kernel=Kernel(
            package=kernel.string("package"),
            device_trees=kernel.strings("device_trees", ()),
            modules=kernel.strings("modules"),
            initramfs_modules=kernel.strings("initramfs_modules"),
            cmdline=kernel.string("cmdline"),
        ),
        boot=Boot(
            method=method,
            firmware_package=firmware_package,
            firmware_files=boot.strings("firmware_files", ()),
            templates=templates,
            device=boot.string("device", "virtio 0"),
            loader_package=boot.string("loader_package", "none"),
            loader_files=boot.string_map("loader_files"),
            fdt=boot.string("fdt", "${fdtcontroladdr}"),
            script_env=boot.string_map("script_env"),
        ),
        partitions=Partitions(
            template=template,
            boot_mib=parts.integer("boot_mib", minimum=16),
            root_min_mib=parts.integer("root_min_mib", minimum=64),
            data_mib=parts.integer("data_mib", minimum=16),
        ),
        qemu=qemu,
        directory=file.parent,
    )
