"""The build's late steps: boot files, file systems, the disk image and the outputs in ``out/``.

Outputs: ``<board>-<role>.img``, ``.img.zst``, ``.bmap`` (bmaptool 2.0, SHA-256), ``.sha256``,
``.lock.json`` (the exact packages) and ``manifest.json`` (board, architecture, packages, kernel,
k3py version, gate results, partitions, sizes, biggest contributors, step timings).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import jinja2

from k3py import __version__
from k3py.image import disk, rootfs
from k3py.image.context import BuildContext
from k3py.image.errors import ImageError

DEFAULT_K3PY_YAML = """\
# k3py settings for this board, read at every boot (edit it on the card's boot partition).
# role: {role}
# server: https://192.0.2.1:6443          # agents: the server to join
# token: K10...::server:...               # the join token (k3py token)
# node-name: node1
# node-label: [example.com/zone=a]
# node-taint: []
# node-ip: 192.0.2.10
# flannel-iface: eth0
# ssh-authorized-keys: ["ssh-ed25519 AAAA... you@host"]
# root-password-hash: "$6$..."            # without it the serial console opens a root shell
# network: {{mode: dhcp}}                  # or {{mode: static, address: 192.0.2.10/24,
#                                          #     gateway: 192.0.2.1, dns: [192.0.2.1]}}
role: {role}
"""


def _render(template: Path, variables: dict[str, object]) -> str:
    environment = jinja2.Environment(  # noqa: S701 (boot config text, not HTML)
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return environment.from_string(template.read_text()).render(**variables)


def boot_files(ctx: BuildContext) -> None:
    """Kernel, initramfs, command line (or U-Boot's script and slot state), device trees, Pi
    firmware, a Pi's U-Boot and k3py.yaml for the FAT."""
    settings, board = ctx.settings, ctx.settings.board
    assert ctx.kernel is not None
    boot = ctx.path("boot")
    boot.mkdir()
    if board.boot.method == "u-boot":
        # Kernel, initramfs and command line live in the root slot; U-Boot's script picks it.
        from k3py.image import uboot

        uboot.slot_boot_files(ctx)
        uboot.boot_partition_files(ctx, boot)
    else:
        shutil.copy2(ctx.kernel.vmlinuz, boot / "vmlinuz")
        shutil.copy2(ctx.path("initrd.img"), boot / "initrd.img")
        (boot / "cmdline.txt").write_text(board.kernel.cmdline + "\n")
    variables: dict[str, object] = {
        "board": board.name,
        "role": settings.role,
        "kernel_version": ctx.kernel.version,
        "cmdline": board.kernel.cmdline,
        "console": board.console,
        "device_trees": [Path(d).name for d in board.kernel.device_trees],
    }
    for target, template in sorted(board.boot.templates.items()):
        (boot / target).write_text(_render(board.directory / template, variables))
    for tree in board.kernel.device_trees:
        source = ctx.kernel.dtb_dir / tree
        if not source.exists():
            raise ImageError(
                f"{board.directory}/board.toml: key 'kernel.device_trees': {tree} is not in "
                f"kernel {ctx.kernel.version}'s device trees ({ctx.kernel.dtb_dir})"
            )
        shutil.copy2(source, boot / source.name)
    firmware_dir = ctx.path("boot-pkgs") / "usr/lib/raspi-firmware"
    for name in board.boot.firmware_files:
        if not (firmware_dir / name).exists():
            raise ImageError(
                f"{board.directory}/board.toml: key 'boot.firmware_files': {name} is not in "
                f"{board.boot.firmware_package}"
            )
        shutil.copy2(firmware_dir / name, boot / name)
    for target, packaged in sorted(board.boot.loader_files.items()):
        loader = ctx.path("boot-pkgs") / packaged.lstrip("/")
        if not loader.is_file():
            raise ImageError(
                f"{board.directory}/board.toml: key 'boot.loader_files': {packaged} is not in "
                f"{board.boot.loader_package}"
            )
        shutil.copy2(loader, boot / target)
    if settings.config_file is not None:
        shutil.copyfile(settings.config_file, boot / "k3py.yaml")
    else:
        (boot / "k3py.yaml").write_text(DEFAULT_K3PY_YAML.format(role=settings.role))


def filesystems(ctx: BuildContext) -> None:
    """ext4 root (slot A), ext4 data (the image's /var) and the FAT boot partition."""
    settings = ctx.settings
    epoch = settings.source_date_epoch
    data = ctx.path("data")
    data.mkdir()
    var = ctx.rootfs / "var"
    for entry in sorted(var.iterdir()):
        shutil.move(str(entry), data / entry.name)
    for directory in ("lib/k3py", "log", "tmp"):
        (data / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(data / "tmp", 0o1777)  # noqa: S103 (/var/tmp is sticky and world-writable)
    for name, target in (("run", "../run"), ("lock", "../run/lock")):
        link = data / name
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        if not link.is_symlink():
            link.symlink_to(target)

    rootfs.clamp_times(ctx.rootfs, epoch)
    rootfs.clamp_times(data, epoch)

    used = disk.tree_size(ctx.rootfs)
    minimum = settings.board.partitions.root_min_mib * disk.MIB
    root_size = max(minimum, disk.round_up(int(used * 1.15) + 24 * disk.MIB, 16 * disk.MIB))
    seed = f"k3py/{settings.name}"
    disk.make_ext4(ctx.path("root.ext4"), root_size, ctx.rootfs, disk.ROOT_LABELS[0],
                   f"{seed}/root", epoch, journal=False)  # fmt: skip
    data_size = settings.board.partitions.data_mib * disk.MIB
    disk.make_ext4(ctx.path("data.ext4"), data_size, data, disk.DATA_LABEL, f"{seed}/data",
                   epoch, journal=True)  # fmt: skip
    boot_size = settings.board.partitions.boot_mib * disk.MIB
    disk.make_fat(ctx.path("boot.vfat"), boot_size, ctx.path("boot"),
                  disk.stable_hex(f"{seed}/boot", 8), epoch)  # fmt: skip
    ctx.facts["rootfs_used_bytes"] = used
    ctx.facts["root_mib"] = root_size // disk.MIB
    sizes: Counter[str] = Counter()
    for path, package in ctx.owners.items():
        full = ctx.rootfs / path
        if full.is_file() and not full.is_symlink():
            sizes[package] += full.stat().st_size
    firmware = ctx.rootfs / "usr/lib/python3/dist-packages/k3py"
    sizes["k3py (firmware)"] = sum(f.stat().st_size for f in firmware.rglob("*") if f.is_file())
    modules = ctx.rootfs / "usr/lib/modules"
    sizes["kernel modules (pruned)"] = sum(
        f.stat().st_size for f in modules.rglob("*") if f.is_file()
    )
    ctx.facts["biggest"] = [{"what": name, "bytes": size} for name, size in sizes.most_common(15)]


def disk_image(ctx: BuildContext) -> None:
    """Lay out the MBR with sfdisk and copy the partitions in, zero blocks left as holes."""
    settings = ctx.settings
    parts = settings.board.partitions
    root_mib = int(ctx.facts["root_mib"])
    total = (2 + parts.boot_mib + 2 * root_mib + parts.data_mib) * disk.MIB
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    image = settings.out_dir / f"{settings.name}.img"
    image.unlink(missing_ok=True)
    with image.open("wb") as file:
        file.truncate(total)
    partitions = disk.layout(
        settings.board.directory / parts.template,
        image,
        {"disk_id": "0x" + disk.stable_hex(f"k3py/{settings.name}/disk", 8),
         "boot_mib": parts.boot_mib, "root_mib": root_mib, "data_mib": parts.data_mib},
    )  # fmt: skip
    sources = {"boot": "boot.vfat", "rootA": "root.ext4", "data": "data.ext4"}
    for partition in partitions:
        if partition.name in sources:
            source = ctx.path(sources[partition.name])
            if source.stat().st_size > partition.size:
                raise ImageError(
                    f"{partition.name} needs {source.stat().st_size} bytes, its partition has "
                    f"{partition.size} (check {parts.template})"
                )
            disk.write_sparse(image, partition.start, source)
    ctx.facts["partitions"] = [
        {"number": p.number, "name": p.name, "start": p.start, "size": p.size, "type": p.type}
        for p in partitions
    ]
    ctx.facts["image"] = image


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def outputs(ctx: BuildContext) -> None:
    """Compressed copy, bmap, checksums, package lock and manifest."""
    import zstandard

    from k3py.image import debian
    from k3py.image.bmap import create_bmap

    settings = ctx.settings
    image: Path = ctx.facts["image"]
    compressed = image.with_name(image.name + ".zst")
    # Fixed level and worker count: zstd's output then depends only on the input.
    compressor = zstandard.ZstdCompressor(level=10, threads=2, write_content_size=True)
    with image.open("rb") as src, compressed.open("wb") as dst:
        compressor.copy_stream(src, dst, size=image.stat().st_size)
    bmap = image.with_suffix(".bmap")
    create_bmap(image, bmap)
    sums = {p.name: _sha256(p) for p in (image, compressed)}
    image.with_suffix(".sha256").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    lock = settings.out_dir / f"{settings.name}.lock.json"
    debian.write_lock(lock, ctx.packages, settings.suite)
    allocated = image.stat().st_blocks * 512
    manifest = {
        "board": settings.board.name,
        "role": settings.role,
        "architecture": settings.board.architecture,
        "k3py_version": __version__,
        "source_date_epoch": settings.source_date_epoch,
        "suite": settings.suite,
        "kernel": ctx.facts["kernel"],
        "packages": {
            group: [{"name": p.name, "version": p.version, "suite": p.suite} for p in packages]
            for group, packages in sorted(ctx.packages.items())
        },
        "gates": ctx.facts["gates"],
        "partitions": ctx.facts["partitions"],
        "sizes": {
            "image_bytes": image.stat().st_size,
            "image_allocated_bytes": allocated,
            "compressed_bytes": compressed.stat().st_size,
            "rootfs_used_bytes": ctx.facts["rootfs_used_bytes"],
            "pyc_files": ctx.facts["pyc_files"],
            "pruned_bytes": ctx.facts["pruned_bytes"],
        },
        "biggest": ctx.facts["biggest"],
        "container_images": ctx.facts.get("container_images", []),
        "firmware": ctx.facts["firmware"],
        "downloaded_bytes": ctx.facts["downloaded_bytes"],
        "sha256": sums,
        "timings": ctx.timings,
    }
    # One out/ may hold several images: each keeps its own manifest; manifest.json is the latest.
    manifest_path = settings.out_dir / "manifest.json"
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (settings.out_dir / f"{settings.name}.manifest.json").write_text(text)
    manifest_path.write_text(text)
