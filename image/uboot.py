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
