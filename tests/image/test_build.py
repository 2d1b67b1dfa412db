"""Built images inspected without booting: partition table, FAT and ext4 contents, manifest,
gate results, outputs, and a bit-identical rebuild.

Images are built once per session (``tests.image.builds``) and shared with the QEMU tier.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import zstandard

from k3py.image.bmap import read_bmap
from tests.image.builds import (
    BuiltImage,
    built_image,
    firmware_snapshot,
    run_build,
    settings_for,
)

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]

QEMU_IMAGES = [
    ("qemu-virt-arm64", "agent"),
    ("qemu-virt-arm64", "server"),
    ("qemu-virt-armv7", "agent"),
    ("qemu-virt-armv7", "server"),
]
ARCH = {"qemu-virt-arm64": "arm64", "qemu-virt-armv7": "armhf"}


@pytest.fixture(params=QEMU_IMAGES, ids=lambda p: f"{p[0]}-{p[1]}")
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    board, role = request.param
    return built_image(request, tmp_path_factory, board, role)


def manifest_of(built: BuiltImage) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(built.manifest.read_text())
    return data


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partition_table(image: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True, check=True)
    partitions: list[dict[str, Any]] = json.loads(out.stdout)["partitiontable"]["partitions"]
    return partitions


def fat_listing(image: Path, offset: int) -> set[str]:
    out = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{offset}", "::"],
        capture_output=True,
        text=True,
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    return {line.removeprefix("::/").strip() for line in out.stdout.splitlines() if line.strip()}


def fat_file(image: Path, offset: int, name: str) -> str:
    out = subprocess.run(
        ["mtype", "-i", f"{image}@@{offset}", f"::{name}"],
        capture_output=True,
        text=True,
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    return out.stdout


def extract_partition(image: Path, partition: dict[str, Any], target: Path) -> Path:
    with image.open("rb") as src, target.open("wb") as dst:
        src.seek(int(partition["start"]) * 512)
        remaining = int(partition["size"]) * 512
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if chunk.count(0) == len(chunk):
                dst.seek(len(chunk), 1)
            else:
                dst.write(chunk)
            remaining -= len(chunk)
        dst.truncate()
    return target


def debugfs(fs: Path, request: str) -> str:
    """debugfs's answer; it reports a missing path on stderr and still exits 0."""
    out = subprocess.run(
        ["debugfs", "-R", request, str(fs)], capture_output=True, text=True, check=True
    )
    return out.stdout + out.stderr


def test_partition_table_has_boot_two_root_slots_and_data(built: BuiltImage) -> None:
    partitions = partition_table(built.image)
    assert [p["type"] for p in partitions] == ["c", "83", "83", "83"]
    assert partitions[0].get("bootable") is True
    assert partitions[1]["size"] == partitions[2]["size"]  # slot B can hold what slot A holds
    end = max(int(p["start"]) + int(p["size"]) for p in partitions) * 512
    assert end <= built.image.stat().st_size
    recorded = manifest_of(built)["partitions"]
    assert [p["start"] for p in recorded] == [int(p["start"]) * 512 for p in partitions]


def test_boot_partition_holds_the_boot_script_slot_state_and_k3py_yaml(
    built: BuiltImage, tmp_path: Path
) -> None:
    from k3py.cluster.ota import bootenv

    boot = partition_table(built.image)[0]
    offset = int(boot["start"]) * 512
    listing = fat_listing(built.image, offset)
    assert {"boot.scr", "k3pyenv.0", "k3pyenv.1", "k3py.yaml"} <= listing
    assert not {"vmlinuz", "initrd.img"} & listing  # they live in the root slots (U-Boot)

    def read(name: str) -> bytes:
        return subprocess.run(
            ["mcopy", "-i", f"{built.image}@@{offset}", f"::{name}", "-"],
            capture_output=True, check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        ).stdout  # fmt: skip

    assert b"root=LABEL=root-${k3py_slot} k3py.slot=${k3py_slot}" in read("boot.scr")
    state = read("k3pyenv.0")
    assert bootenv.decode(state) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3",
                                     "BOOT_B_LEFT": "3", "K3PY_TRIAL": "none"}  # fmt: skip
    root = extract_partition(built.image, partition_table(built.image)[1], tmp_path / "root")
    assert "Type: regular" in debugfs(root, "stat /boot/vmlinuz")
    assert "Type: regular" in debugfs(root, "stat /boot/initrd.img")
    assert "k3py_cmdline=console=ttyAMA0" in debugfs(root, "cat /boot/cmdline.env")
    baked = fat_file(built.image, offset, "k3py.yaml")
    assert f"role: {built.role}" in baked
    assert ("server: https://10.0.2.2:9" in baked) == (built.role == "agent")  # --config


def test_root_slot_is_a_merged_usr_appliance_with_the_firmware(
    built: BuiltImage, tmp_path: Path
) -> None:
    root = extract_partition(built.image, partition_table(built.image)[1], tmp_path / "root")
    assert (
        "Filesystem volume name:   root-a"
        in subprocess.run(
            ["dumpe2fs", "-h", str(root)], capture_output=True, text=True, check=True
        ).stdout
    )
    top = debugfs(root, "ls -l /")
    for link in ("bin", "sbin", "lib"):
        assert debugfs(root, f"stat /{link}").count("Type: symlink") == 1, top
    firmware = debugfs(root, "ls /usr/lib/python3/dist-packages/k3py")
    assert "cli.py" in firmware
    assert "cluster" in firmware
    assert "image" not in firmware.split()  # the build host's pipeline stays on the host
    pycache = debugfs(root, "ls /usr/lib/python3/dist-packages/k3py/__pycache__")
    assert "cli.cpython-313.pyc" in pycache  # bytecode for the board's Python 3.13
    assert "Type: regular" in debugfs(root, "stat /usr/bin/k3py")
    inittab = debugfs(root, "cat /etc/inittab")
    # k3py starts through the firmware launcher, from the root slot (OTA firmware updates).
    service = next(line for line in inittab.splitlines() if "supervise k3py " in line)
    assert service.endswith(f"/usr/bin/python3 -m k3py.cluster.ota.launcher {built.role}")
    launcher = "/usr/lib/python3/dist-packages/k3py/cluster/ota/launcher.py"
    assert "Type: regular" in debugfs(root, f"stat {launcher}")
    assert built.board in debugfs(root, "cat /usr/lib/k3py/board").splitlines()
    keys = debugfs(root, "cat /usr/lib/k3py/config-keys").split()
    assert {"token", "node-label", "node-ip"} <= set(keys)  # the boot configuration's keys
    assert "dockerd" in inittab  # both roles run workloads
    assert "supervise containerd /usr/bin/containerd --config" in inittab
    assert "disabled_plugins" in debugfs(root, "cat /usr/lib/k3py/containerd.toml")
    # OpenSSL's default CAs: the hashed directory, no default file parsed by every context.
    assert "File not found" in debugfs(root, "stat /usr/lib/ssl/cert.pem")
    assert "mozilla/ISRG_Root_X1.crt" in debugfs(root, "stat /etc/ssl/certs/4042bcee.0")
    assert "File not found" in debugfs(root, "stat /usr/share/man")  # pruned
    assert "File not found" in debugfs(root, "stat /usr/lib/python3.13/sitecustomize.py")
    version = manifest_of(built)["kernel"]["version"]
    modules = debugfs(root, f"ls -p /usr/lib/modules/{version}/kernel/drivers/net/vxlan")
    assert "vxlan.ko" in modules
    # Stored without Debian's signature (checking it is most of a module's load on ARMv7).
    vxlan = tmp_path / "vxlan.ko"
    debugfs(root, f"dump /usr/lib/modules/{version}/kernel/drivers/net/vxlan/vxlan.ko {vxlan}")
    assert vxlan.read_bytes().startswith(b"\x7fELF")
    assert not vxlan.read_bytes().endswith(b"~Module signature appended~\n")
    assert "modules.dep" in debugfs(root, f"ls /usr/lib/modules/{version}")


def test_manifest_records_packages_kernel_gates_sizes_and_timings(built: BuiltImage) -> None:
    manifest = manifest_of(built)
    assert manifest["board"] == built.board
    assert manifest["architecture"] == ARCH[built.board]
    names = {p["name"]: p["version"] for p in manifest["packages"]["rootfs"]}
    assert names["python3-aiohttp"].startswith("3.11")
    assert {"docker.io", "nftables"} <= set(names)
    assert manifest["kernel"]["version"]
    assert manifest["gates"]["kernel"]["status"] == "pass"
    assert manifest["gates"]["kernel"]["exit_code"] == 0
    assert manifest["gates"]["elf"]["passed"] is True
    assert manifest["gates"]["elf"]["files_checked"] > 100
    assert manifest["sizes"]["compressed_bytes"] < manifest["sizes"]["image_bytes"]
    for step in ("resolve-packages", "assemble-rootfs", "compile-bytecode", "run-gates"):
        assert step in manifest["timings"]
    assert manifest["biggest"][0]["bytes"] > 0


def test_outputs_checksums_bmap_and_compressed_copy_agree(built: BuiltImage) -> None:
    image = built.image
    sums: dict[str, str] = {}
    for line in image.with_suffix(".sha256").read_text().splitlines():
        recorded, name = line.split("  ")
        sums[name] = recorded
    assert sums[image.name] == sha256(image)
    digest = hashlib.sha256()
    with image.with_name(image.name + ".zst").open("rb") as file:
        reader = zstandard.ZstdDecompressor().stream_reader(file)
        while block := reader.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == sums[image.name]
    bmap = read_bmap(image.with_suffix(".bmap"))
    assert bmap.image_size == image.stat().st_size
    assert bmap.checksum_type == "sha256"
    assert 0 < bmap.mapped_size < image.stat().st_size  # root slot B and free space are holes
    lock = json.loads(built.out_dir.joinpath(f"{built.board}-{built.role}.lock.json").read_text())
    assert {"rootfs", "kernel", "initramfs"} <= set(lock["groups"])


def test_rebuild_with_same_inputs_is_bit_identical(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    first = built_image(request, tmp_path_factory, "qemu-virt-arm64", "server")
    settings = settings_for(
        "qemu-virt-arm64",
        "server",
        tmp_path_factory.mktemp("rebuild"),
        firmware_wheel=firmware_snapshot(request, tmp_path_factory),
    )
    run_build(settings)
    second = settings.out_dir / first.image.name
    assert sha256(second) == sha256(first.image)
    compressed = first.image.name + ".zst"
    assert sha256(settings.out_dir / compressed) == sha256(first.out_dir / compressed)


def test_data_partition_holds_var_and_the_airgap_images(built: BuiltImage, tmp_path: Path) -> None:
    data = extract_partition(built.image, partition_table(built.image)[3], tmp_path / "data")
    assert (
        "Filesystem volume name:   data"
        in subprocess.run(
            ["dumpe2fs", "-h", str(data)], capture_output=True, text=True, check=True
        ).stdout
    )
    assert 'Fast link dest: "../run"' in debugfs(data, "stat /run")
    images = debugfs(data, "ls /lib/k3py/agent/images")
    assert "k3py-httpd.tar" in images
