"""The build's gates stop a broken image, naming the file; the Raspberry Pi images carry what the
Pi firmware needs on their boot partitions, U-Boot and its A/B boot script and state.
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
                   "bcm2837-rpi-3-b.dtb", "config.txt", "u-boot.bin", "boot.scr", "k3pyenv.0",
                   "k3pyenv.1", "k3py.yaml"},
    "rpi3-armv7": {"bootcode.bin", "start.elf", "fixup.dat", "bcm2837-rpi-3-b.dtb",
                   "bcm2836-rpi-2-b.dtb", "config.txt", "u-boot.bin", "u-boot-rpi2.bin",
                   "boot.scr", "k3pyenv.0", "k3pyenv.1", "k3py.yaml"},
}  # fmt: skip


@pytest.mark.parametrize("board", sorted(PI_BOOT_FILES))
def test_raspberry_pi_image_boots_u_boot_with_the_a_b_script_and_slot_state(
    board: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from k3py.cluster.ota import bootenv
    from tests.image.test_build import debugfs, extract_partition, partition_table

    built = built_image(request, tmp_path_factory, board, "server")
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    fat = f"{built.image}@@1M"
    listing = subprocess.run(
        ["mdir", "-b", "-i", fat, "::"], capture_output=True, text=True, check=True, env=env
    ).stdout
    names = {line.removeprefix("::/").strip() for line in listing.splitlines()}
    assert PI_BOOT_FILES[board] <= names
    assert not {"vmlinuz", "initrd.img", "cmdline.txt"} & names  # they live in the root slots

    def read(name: str) -> bytes:
        return subprocess.run(
            ["mcopy", "-i", fat, f"::{name}", "-"], capture_output=True, check=True, env=env
        ).stdout

    config = read("config.txt").decode()
    assert "kernel=u-boot.bin" in config
    assert "initramfs initrd.img" not in config  # U-Boot loads it from the slot
    assert "enable_uart=1" in config
    assert ("arm_64bit=1" in config) == board.endswith("arm64")
    assert read("u-boot.bin")[:4] != b"\0\0\0\0"
    # boot.scr: a 64-byte legacy image header, then a 4-byte length table, then the script.
    scr = read("boot.scr")
    assert scr[:4] == bytes.fromhex("27051956")  # U-Boot's legacy image magic
    script = scr[64 + 8 :].decode()
    assert "fatload mmc 0:1 ${ramdisk_addr_r} k3pyenv.0" in script
    assert "fatwrite mmc 0:1 ${ramdisk_addr_r} k3pyenv.1" in script
    assert "setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1" in script
    assert "root=LABEL=root-${k3py_slot} k3py.slot=${k3py_slot}" in script
    kernel_command = "booti" if board.endswith("arm64") else "bootz"
    assert (
        f"{kernel_command} ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{fdt_addr}}"
        in script
    )
    for copy in ("k3pyenv.0", "k3pyenv.1"):
        assert bootenv.decode(read(copy)) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3",
                                              "BOOT_B_LEFT": "3", "K3PY_TRIAL": "none"}  # fmt: skip
    slot_a = partition_table(built.image)[1]
    root = extract_partition(built.image, slot_a, tmp_path_factory.mktemp("root") / "a.ext4")
    assert "Type: regular" in debugfs(root, "stat /boot/vmlinuz")
    assert "Type: regular" in debugfs(root, "stat /boot/initrd.img")
    cmdline = debugfs(root, "cat /boot/cmdline.env")
    assert "k3py_cmdline=console=ttyS1,115200" in cmdline
    assert "cgroup_enable=memory cgroup_memory=1" in cmdline
    assert "root=" not in cmdline  # the script names the slot it boots
