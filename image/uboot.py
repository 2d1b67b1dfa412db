"""Boards that boot through U-Boot: the A/B boot script and what each root slot carries.

With ``method = "u-boot"`` the boot partition holds only U-Boot's script (``boot.scr``, built
from ``image/uboot/boot-ab.cmd.j2`` with ``mkimage`` from u-boot-tools), the two copies of the
slot state (:mod:`k3py.cluster.ota.bootenv`) and ``k3py.yaml``; the kernel, the initramfs and
the command line go into the root file system's ``/boot``, so a system update that writes a
root slot switches kernel, modules and root file system together. U-Boot itself is the
board's: Debian's ``u-boot-qemu`` as QEMU's ``-bios``, or ``u-boot-rpi`` on a Pi (its
``u-boot.bin`` copied onto the boot partition, started by the Pi firmware through config.txt).
"""

from __future__ import annotations

import shutil
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path

import jinja2

from k3py.cluster.ota import bootenv
from k3py.image import disk
from k3py.image.context import BuildContext

SCRIPT_TEMPLATE = Path(__file__).with_name("uboot") / "boot-ab.cmd.j2"
# Debian architecture → mkimage's name for it and U-Boot's command for its kernel image format.
MKIMAGE_ARCH = {"arm64": "arm64", "armhf": "arm"}
KERNEL_COMMAND = {"arm64": "booti", "armhf": "bootz"}
# The QEMU boards' U-Boot environment (Debian's qemu_arm and qemu_arm64 builds keep it at the
# start of the virt machine's second 64 MiB flash bank, 256 KiB, a CRC-32 before it).
QEMU_FLASH_BYTES = 64 * 1024 * 1024
QEMU_ENV_BYTES = 0x40000
# What the QEMU boards' flash changes in U-Boot's built-in environment: no autoboot countdown
# (2 s of every boot) and only the card (virtio) scanned, not QEMU's fw_cfg, USB and SCSI first.
QEMU_ENV = {"bootdelay": "0", "boot_targets": "virtio0"}


def script_text(
    board: str,
    architecture: str,
    device: str,
    fdt: str = "${fdtcontroladdr}",
    script_env: Mapping[str, str] | None = None,
) -> str:
    """The boot script's source; ``fdt`` is the device tree address booti/bootz get (QEMU's
    tree is U-Boot's control tree, a Pi's is the firmware's in ``${fdt_addr}``) and
    ``script_env`` the variables set first (a Pi's U-Boot has no room for Debian's kernel
    between its default load addresses)."""
    environment = jinja2.Environment(  # noqa: S701 (a boot script, not HTML)
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return environment.from_string(SCRIPT_TEMPLATE.read_text()).render(
        board=board, device=device, attempts=bootenv.ATTEMPTS,
        env_size=f"0x{bootenv.ENV_SIZE:x}", kernel_command=KERNEL_COMMAND[architecture],
        fdt=fdt, script_env=sorted((script_env or {}).items()),
    )  # fmt: skip


def boot_partition_files(ctx: BuildContext, boot: Path) -> None:
    """``boot.scr`` and the initial slot state (slot A first, full counters)."""
    board = ctx.settings.board
    source = ctx.path("boot.cmd")
    source.write_text(
        script_text(board.name, board.architecture, board.boot.device, board.boot.fdt,
                    board.boot.script_env)
    )  # fmt: skip
    disk.run(["mkimage", "-A", MKIMAGE_ARCH[board.architecture], "-O", "linux", "-T", "script",
              "-C", "none", "-n", f"k3py A/B boot ({board.name})", "-d", str(source),
              str(boot / "boot.scr")],
             env={"SOURCE_DATE_EPOCH": str(ctx.settings.source_date_epoch)})  # fmt: skip
    for name, blob in bootenv.initial_files().items():
        (boot / name).write_bytes(blob)


def slot_boot_files(ctx: BuildContext) -> None:
    """Kernel, initramfs and command line into the root file system's ``/boot``."""
    assert ctx.kernel is not None
    target = ctx.rootfs / "boot"
    target.mkdir(exist_ok=True)
    shutil.copy2(ctx.kernel.vmlinuz, target / "vmlinuz")
    shutil.copy2(ctx.path("initrd.img"), target / "initrd.img")
    # U-Boot's "env import -t" format: the script adds root= and k3py.slot= for the slot.
    (target / "cmdline.env").write_text(f"k3py_cmdline={ctx.settings.board.kernel.cmdline}\n")


def default_environment(firmware: bytes) -> list[tuple[str, str]]:
    """U-Boot's built-in environment, read from its binary: the ``key=value`` strings, each
    ended by a NUL, around ``bootcmd=`` (the block ends with an empty string)."""
    start = firmware.find(b"\0bootcmd=") + 1
    if start == 0:
        raise ValueError("no built-in environment (bootcmd=) in this U-Boot binary")
    end = firmware.find(b"\0\0", start)
    entries = firmware[start:end].split(b"\0")
    while True:  # back to the block's first entry
        previous = firmware.rfind(b"\0", 0, start - 1)
        entry = firmware[previous + 1 : start - 1]
        if b"=" not in entry or not entry.isascii() or not entry[:1].isalpha():
            break
        entries.insert(0, entry)
        start = previous + 1
    return [(k.decode(), v.decode()) for k, _, v in (e.partition(b"=") for e in entries)]


def qemu_env_flash(firmware: Path, changes: Mapping[str, str] = QEMU_ENV) -> bytes:
    """The QEMU boards' second flash bank: U-Boot's own environment with ``changes``, as
    ``saveenv`` would store it (CRC-32, then the NUL-separated entries), the rest erased."""
    values = dict(default_environment(firmware.read_bytes()))
    values.update(changes)
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in values.items()) + b"\0"
    if len(body) > QEMU_ENV_BYTES - 4:
        raise ValueError("the U-Boot environment does not fit its flash sector")
    body = body.ljust(QEMU_ENV_BYTES - 4, b"\0")
    block = zlib.crc32(body).to_bytes(4, "little") + body
    return block.ljust(QEMU_FLASH_BYTES, b"\xff")


if __name__ == "__main__":
    # python -m k3py.image.uboot /usr/lib/u-boot/qemu_arm64/u-boot.bin env.flash
    if len(sys.argv) != 3:
        sys.exit("usage: python -m k3py.image.uboot U-BOOT.BIN FLASH-FILE")
    Path(sys.argv[2]).write_bytes(qemu_env_flash(Path(sys.argv[1])))
