"""The build's gates stop a broken image, naming the file; the Raspberry Pi images carry what the
Pi firmware needs on their boot partitions.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from k3py.image.errors import GateError
from tests.image.builds import built_image, run_build, settings_for

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]


def test_gates_stop_the_build_naming_a_foreign_elf_a_missing_library_and_a_pruned_module(
    tmp_path: Path,
) -> None:
    overlay = tmp_path / "overlay"
    (overlay / "usr/bin").mkdir(parents=True)
    shutil.copy("/usr/bin/true", overlay / "usr/bin/host-true")  # the build host's x86-64 ELF
    settings = settings_for(
        "qemu-virt-arm64",
        "server",
        tmp_path / "build",
        overlay=overlay,
        extra_prune=(
            "usr/lib/aarch64-linux-gnu/libyaml-0.so.2*",  # PyYAML's C extension needs it
            "usr/lib/modules/*/kernel/drivers/net/vxlan",  # flannel's VXLAN backend needs it
        ),
    )
    with pytest.raises(GateError) as stopped:
        run_build(settings)
    message = str(stopped.value)
    assert "/usr/bin/host-true" in message
    assert "EM_X86_64" in message
    assert "needs libyaml-0.so.2" in message
    assert "(package python3-yaml)" in message
    assert "CONFIG_VXLAN" in message
    assert "vxlan (expected in /usr/lib/modules/" in message
    assert not (settings.out_dir / "qemu-virt-arm64-server.img").exists()


PI_BOOT_FILES = {
    "rpi4-arm64": {"bootcode.bin", "start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb",
                   "bcm2837-rpi-3-b.dtb", "config.txt", "cmdline.txt", "vmlinuz", "initrd.img"},
    "rpi3-armv7": {"bootcode.bin", "start.elf", "fixup.dat", "bcm2837-rpi-3-b.dtb",
                   "bcm2836-rpi-2-b.dtb", "config.txt", "cmdline.txt", "vmlinuz", "initrd.img"},
}  # fmt: skip


@pytest.mark.parametrize("board", sorted(PI_BOOT_FILES))
def test_raspberry_pi_image_boot_partition_has_firmware_device_trees_and_configs(
    board: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    built = built_image(request, tmp_path_factory, board, "server")
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    fat = f"{built.image}@@1M"
    listing = subprocess.run(
        ["mdir", "-b", "-i", fat, "::"], capture_output=True, text=True, check=True, env=env
    ).stdout
    names = {line.removeprefix("::/").strip() for line in listing.splitlines()}
    assert PI_BOOT_FILES[board] <= names

    def read(name: str) -> str:
        return subprocess.run(
            ["mtype", "-i", fat, f"::{name}"], capture_output=True, text=True, check=True, env=env
        ).stdout

    config = read("config.txt")
    assert "kernel=vmlinuz" in config
    assert "initramfs initrd.img followkernel" in config
    assert "enable_uart=1" in config
    assert ("arm_64bit=1" in config) == board.endswith("arm64")
    cmdline = read("cmdline.txt")
    assert "cgroup_enable=memory cgroup_memory=1" in cmdline
    assert "root=LABEL=root-a" in cmdline
