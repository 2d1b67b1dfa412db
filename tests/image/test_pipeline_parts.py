"""The pipeline's parts on small real inputs: resolver, .deb unpacking, module closure, cpio,
and the ELF audit on the build host's own binaries (planted into a tree that is not theirs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from k3py.image import debfile, kernel, rootfs
from k3py.image.containers import install_images
from k3py.image.debian import PackageIndex, parse_packages, parse_relations, read_lock, write_lock
from k3py.image.elfaudit import AuditReport, audit
from k3py.image.errors import ImageError

INDEX = """\
Package: app
Version: 1.0
Architecture: arm64
Depends: libfoo (>= 1.2) | libbar, mail-transport-agent, debconf | debconf-2.0
Pre-Depends: libc6
Filename: pool/a/app_1.0_arm64.deb
Size: 10
SHA256: aa

Package: libbar
Version: 2
Architecture: arm64
Depends: libc6
Filename: pool/l/libbar_2_arm64.deb
Size: 10
SHA256: bb

Package: libc6
Version: 2.41
Architecture: arm64
Filename: pool/g/libc6_2.41_arm64.deb
Size: 10
SHA256: cc

Package: postfix
Version: 3
Architecture: arm64
Provides: mail-transport-agent
Filename: pool/p/postfix_3_arm64.deb
Size: 10
SHA256: dd

Package: debconf
Version: 1
Architecture: all
Filename: pool/d/debconf_1_all.deb
Size: 10
SHA256: ee
"""


def test_relations_parse_alternatives_versions_and_arch_qualifiers() -> None:
    assert parse_relations("a (>= 1) | b, c:any") == [
        [("a", ">=", "1"), ("b", None, None)],
        [("c", None, None)],
    ]


def test_resolver_picks_real_alternatives_and_providers_and_honours_exclusions() -> None:
    index = PackageIndex("arm64", parse_packages(INDEX))
    names = [p.name for p in index.resolve(["app"], exclude=["debconf"])]
    # libfoo does not exist, so libbar; postfix provides the virtual MTA; debconf is left out.
    assert names == ["app", "libbar", "libc6", "postfix"]


def test_resolver_names_an_unsatisfiable_dependency() -> None:
    index = PackageIndex("arm64", parse_packages(INDEX.replace("Provides: mail-transport", "X:")))
    with pytest.raises(ImageError, match="app depends on mail-transport-agent"):
        index.resolve(["app"])


def _deb(path: Path, members: dict[str, bytes | str]) -> Path:
    """A real .deb (ar + data.tar.xz) holding files (bytes) and symlinks (str targets)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"./{name}")
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    payload = data.getvalue()
    with path.open("wb") as out:
        out.write(b"!<arch>\n")
        for name, blob in (("debian-binary", b"2.0\n"), ("data.tar.xz", payload)):
            out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode())
            out.write(blob + (b"\n" if len(blob) % 2 else b""))
    return path


def test_unpacking_maps_bin_and_lib_into_usr_and_keeps_relative_links_right(
    tmp_path: Path,
) -> None:
    deb = _deb(
        tmp_path / "x.deb",
        {
            "bin/tool": b"#!/bin/sh\n",
            "sbin/helper": "../usr/libexec/helper",
            "usr/libexec/helper": b"x",
        },
    )
    root = tmp_path / "root"
    root.mkdir()
    debfile.create_merged_links(root)
    owners: dict[str, str] = {}
    debfile.unpack(deb, root, "x", owners)
    assert (root / "usr/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(root / "bin") == "usr/bin"
    assert (root / "sbin/helper").resolve() == (root / "usr/libexec/helper").resolve()
    assert owners["usr/bin/tool"] == "x"


def test_module_closure_puts_dependencies_first() -> None:
    ext4_deps = ["kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/mbcache.ko.xz"]
    table = {
        "ext4": ("kernel/fs/ext4/ext4.ko.xz", ext4_deps),
        "jbd2": ("kernel/fs/jbd2/jbd2.ko.xz", []),
        "mbcache": ("kernel/fs/mbcache.ko.xz", []),
        "vxlan": ("kernel/drivers/net/vxlan/vxlan.ko.xz", ["kernel/net/ipv4/udp_tunnel.ko.xz"]),
        "udp_tunnel": ("kernel/net/ipv4/udp_tunnel.ko.xz", []),
    }  # fmt: skip
    order = kernel.closure(table, ["ext4", "vxlan", "no-such-module"])
    assert order.index("kernel/fs/jbd2/jbd2.ko.xz") < order.index("kernel/fs/ext4/ext4.ko.xz")
    assert order[-1] == "kernel/drivers/net/vxlan/vxlan.ko.xz"
    assert len(order) == 5


def test_module_signature_is_cut_off_as_sign_file_appends_it() -> None:
    body = b"\x7fELF" + bytes(range(256)) * 40
    signature = b"\x30\x82" + b"\x5a" * 261
    info = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(signature).to_bytes(4, "big")
    signed = body + signature + info + kernel.SIGNATURE_MAGIC
    assert kernel.unsigned(signed) == body
    assert kernel.unsigned(body) == body  # an unsigned module stays as it is
    # A length that points before the start is not a signature: nothing is cut.
    broken = b"tiny" + (10_000).to_bytes(4, "big") + kernel.SIGNATURE_MAGIC
    assert kernel.unsigned(broken) == broken


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is installed by 'make setup'")
def test_initramfs_archive_is_a_valid_newc_cpio(tmp_path: Path) -> None:
    writer = kernel.CpioWriter(mtime=1754697600)
    writer.directory("bin")
    writer.file("bin/busybox", b"\x7fELF-not-really", 0o755)
    writer.symlink("bin/sh", "busybox")
    listing = subprocess.run(
        ["cpio", "-itv"], input=writer.finish(), capture_output=True, check=True
    ).stdout.decode()
    assert "bin/busybox" in listing
    assert "bin/sh -> busybox" in listing


def _host_tree(tmp_path: Path) -> Path:
    """/usr/bin/true with its libraries, laid out as the build host has them."""
    root = tmp_path / "tree"
    for path in ("/usr/bin/true", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(path).resolve(), target)
    return root


def audit_as_host(root: Path, owners: dict[str, str]) -> AuditReport:
    return audit(
        root,
        owners,
        elf_class=64,
        machine="EM_X86_64",
        triplet="x86_64-linux-gnu",
        hard_float=False,
    )


def test_elf_audit_passes_a_consistent_tree(tmp_path: Path) -> None:
    root = _host_tree(tmp_path)
    report = audit_as_host(root, {"usr/bin/true": "coreutils"})
    assert report.passed, [str(o) for o in report.offenders]
    assert report.files_checked == 3


def test_elf_audit_names_a_foreign_architecture_binary_and_its_package(tmp_path: Path) -> None:
    root = _host_tree(tmp_path)
    report = audit(
        root,
        {"usr/bin/true": "coreutils"},
        elf_class=64,
        machine="EM_AARCH64",
        triplet="aarch64-linux-gnu",
        hard_float=False,
    )
    offenders = {o.path: o for o in report.offenders}
    assert "usr/bin/true" in offenders
    assert offenders["usr/bin/true"].package == "coreutils"
    assert "EM_X86_64" in offenders["usr/bin/true"].problem


def test_elf_audit_names_a_missing_library_and_interpreter(tmp_path: Path) -> None:
    root = _host_tree(tmp_path)
    (root / "lib/x86_64-linux-gnu/libc.so.6").unlink()
    (root / "lib64/ld-linux-x86-64.so.2").unlink()
    report = audit_as_host(root, {})
    problems = [str(o) for o in report.offenders]
    assert any("usr/bin/true" in p and "needs libc.so.6" in p for p in problems), problems
    assert any("interpreter /lib64/ld-linux-x86-64.so.2" in p for p in problems), problems


def test_airgap_image_is_a_docker_save_archive_for_the_board_architecture(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF stand-in for busybox-static")
    names = install_images(tmp_path / "images", busybox, "armhf", [], epoch=1754697600)
    archive = tmp_path / "images" / names[0]
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        assert entry["RepoTags"] == ["k3py.local/httpd:latest"]
        config = json.loads(tar.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
        layer = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    assert (config["architecture"], config["variant"]) == ("arm", "v7")
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as files:
        assert files.getmember("bin/httpd").linkname == "busybox"
        assert files.extractfile("bin/busybox").read() == busybox.read_bytes()  # type: ignore[union-attr]
    again = install_images(tmp_path / "again", busybox, "armhf", [], epoch=1754697600)
    assert (tmp_path / "again" / again[0]).read_bytes() == archive.read_bytes()


def test_package_lock_round_trips_exact_versions_and_sums(tmp_path: Path) -> None:
    index = PackageIndex("arm64", parse_packages(INDEX))
    groups = {"rootfs": index.resolve(["app"], exclude=["debconf"])}
    lock = tmp_path / "lock.json"
    write_lock(lock, groups, "trixie")
    replayed = read_lock(lock)
    assert [(p.name, p.version, p.sha256, p.filename) for p in replayed["rootfs"]] == [
        (p.name, p.version, p.sha256, p.filename) for p in groups["rootfs"]
    ]
    lock.write_text("{not json")
    with pytest.raises(ImageError, match="cannot read the package lock"):
        read_lock(lock)


def test_qemu_env_flash_is_u_boots_own_environment_without_the_countdown(tmp_path: Path) -> None:
    from k3py.image.uboot import QEMU_ENV_BYTES, QEMU_FLASH_BYTES, qemu_env_flash

    firmware = tmp_path / "u-boot.bin"
    firmware.write_bytes(
        b"\x7f\x00%s%d,%d\x00bootcmd=run distro_bootcmd\x00bootdelay=2\x00"
        b"boot_targets=qfw usb0 virtio0 \x00arch=arm\x00\x00\x01code"
    )
    flash = qemu_env_flash(firmware)
    assert len(flash) == QEMU_FLASH_BYTES
    body = flash[4:QEMU_ENV_BYTES]
    assert int.from_bytes(flash[:4], "little") == zlib.crc32(body)
    entries = body.rstrip(b"\0").split(b"\0")
    assert entries == [
        b"bootcmd=run distro_bootcmd", b"bootdelay=0", b"boot_targets=virtio0", b"arch=arm",
    ]  # fmt: skip
    assert set(flash[QEMU_ENV_BYTES:]) == {0xFF}
    debian = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
    if debian.exists():  # the real one, when u-boot-qemu is installed
        real = qemu_env_flash(debian)[4:QEMU_ENV_BYTES].rstrip(b"\0").split(b"\0")
        values = dict(e.split(b"=", 1) for e in real)
        assert values[b"bootdelay"] == b"0"
        assert b"distro_bootcmd" in values
        assert values[b"kernel_addr_r"].startswith(b"0x")


def test_prune_removes_files_folders_and_links_whose_target_is_not_on_the_host(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/python3.13/test").mkdir(parents=True)
    (root / "usr/lib/python3.13/test/.hidden").write_text("x" * 10)
    (root / "usr/lib/python3.13/os.py").write_text("")
    # As Debian links it: absolute, into the image's /etc, absent on the build host.
    (root / "usr/lib/python3.13/sitecustomize.py").symlink_to("/etc/no-such-dir/sitecustomize.py")
    freed = rootfs.prune(
        root, ["usr/lib/python3.13/test", "usr/lib/python3.13/sitecustomize.py", "no/such/*"]
    )
    assert sorted(p.name for p in (root / "usr/lib/python3.13").iterdir()) == ["os.py"]
    assert freed >= 10
