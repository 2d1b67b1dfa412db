"""``k3py image build``: the build as a flat list of named, timed steps over one context.

:class:`BuildSettings` is frozen and comes from the command line; :class:`BuildContext` carries
the workspace and what each step hands to the next. :data:`STEPS` reads top to bottom as the
build does: packages, root file system, firmware, kernel, pruning, bytecode, gates, boot files,
file systems, disk image, outputs. Each step is printed with its time as it finishes.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from k3py import __version__
from k3py.image import (
    assemble,
    containers,
    debian,
    elfaudit,
    firmware,
    gates,
    kernel,
    rootfs,
)
from k3py.image.context import BuildContext, BuildSettings
from k3py.image.errors import GateError, ImageError

HOST_PYTHON_PACKAGES = ("python3.13-minimal", "libpython3.13-stdlib")


def resolve_packages(ctx: BuildContext) -> None:
    """Resolve the root file system's, kernel's and boot firmware's packages (or read the lock)."""
    settings, content = ctx.settings, ctx.settings.content
    if settings.lock_file is not None:
        ctx.packages = debian.read_lock(settings.lock_file)
        return
    board = settings.board
    index = ctx.archive.index(board.architecture)
    ctx.packages["rootfs"] = index.resolve(
        content.packages_for(settings.role), exclude=content.exclude
    )
    ctx.packages["kernel"] = index.resolve(
        [board.kernel.package], follow=lambda name: name.startswith("linux-image-")
    )
    ctx.packages["initramfs"] = index.resolve(content.initramfs_packages, exclude=content.exclude)
    boot = [p for p in (board.boot.firmware_package, board.boot.loader_package) if p != "none"]
    ctx.packages["boot"] = index.resolve(boot, follow=lambda name: False)
    # The target's Python version, built for the build host, compiles the bytecode natively.
    ctx.packages["host-python"] = ctx.archive.index("amd64").resolve(HOST_PYTHON_PACKAGES)


def fetch_packages(ctx: BuildContext) -> None:
    """Download what the cache lacks (nothing, on a warm cache)."""
    before = ctx.archive.downloaded_bytes
    for group in ctx.packages.values():
        fetched = ctx.archive.fetch(group)
        for package in group:
            ctx.debs[f"{package.architecture}/{package.name}"] = fetched[package.name]
    ctx.facts["downloaded_bytes"] = ctx.archive.downloaded_bytes - before


def _deb(ctx: BuildContext, package: debian.Package) -> Path:
    return ctx.debs[f"{package.architecture}/{package.name}"]


def assemble_rootfs(ctx: BuildContext) -> None:
    """Unpack the packages: root file system, kernel, initramfs and boot firmware trees."""
    if ctx.settings.work_dir.exists():
        shutil.rmtree(ctx.settings.work_dir)
    trees = {"rootfs": "rootfs", "kernel": "kernel", "initramfs": "initramfs-pkgs",
             "boot": "boot-pkgs", "host-python": "host-python"}  # fmt: skip
    for group, directory in trees.items():
        debs = {p.name: _deb(ctx, p) for p in ctx.packages.get(group, [])}
        owners = rootfs.assemble(ctx.path(directory), ctx.packages.get(group, []), debs)
        if group == "rootfs":
            ctx.owners = owners


def configure_rootfs(ctx: BuildContext) -> None:
    """Users, links, busybox init and supervised services, identity; a user overlay last."""
    settings = ctx.settings
    rootfs.configure(
        ctx.rootfs,
        role=settings.role,
        console=settings.board.console,
        applets=settings.content.applets,
        alternatives=settings.content.alternatives,
        boot_modules=settings.content.boot_modules,
        version=__version__,
        architecture=settings.board.architecture,
        board=settings.board.name,
    )
    if settings.ota_key is not None:
        # In the root slot (not /etc/k3py on the data partition): a system update can rotate it.
        key = ctx.rootfs / "usr/lib/k3py/ota-key.pub"
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(settings.ota_key.read_bytes())
    if settings.overlay is not None:
        shutil.copytree(settings.overlay, ctx.rootfs, symlinks=True, dirs_exist_ok=True)


def install_firmware(ctx: BuildContext) -> None:
    """The firmware's part of the k3py wheel built from the tree (cluster and checker; not the
    image builder): the artefact install scripts and OTA bundles ship."""
    wheel = firmware.firmware_wheel(ctx.settings.firmware, ctx.settings.cache_dir)
    files = rootfs.install_firmware(ctx.rootfs, wheel.path)
    ctx.facts["firmware"] = {
        "wheel": wheel.path.name,
        "sha256": wheel.sha256,
        "source": wheel.source,
        "files": files,
    }


def install_container_images(ctx: BuildContext) -> None:
    """Air-gap images (busybox httpd for the board, plus --container-image tarballs), for the
    node's agent (both roles run one; a server-only board just never loads them)."""
    settings = ctx.settings
    ctx.facts["container_images"] = containers.install_images(
        ctx.rootfs / "var/lib/k3py/agent/images",
        ctx.path("initramfs-pkgs") / "usr/bin/busybox",
        settings.board.architecture,
        list(settings.container_images),
        settings.source_date_epoch,
    )


def install_kernel(ctx: BuildContext) -> None:
    """Pruned modules with host depmod, the kernel config, and our initramfs."""
    settings = ctx.settings
    ctx.kernel = kernel.find_kernel(ctx.path("kernel"))
    wanted = [*settings.content.kernel_modules, *settings.board.kernel.modules,
              *settings.board.kernel.initramfs_modules]  # fmt: skip
    kept, unavailable = kernel.install_modules(ctx.kernel, ctx.rootfs, wanted)
    busybox = ctx.path("initramfs-pkgs") / "usr/bin/busybox"
    initramfs_modules = kernel.build_initramfs(
        ctx.kernel,
        busybox,
        settings.board.kernel.initramfs_modules,
        ctx.path("initrd.img"),
        settings.source_date_epoch,
    )
    ctx.facts["kernel"] = {
        "version": ctx.kernel.version,
        "modules_kept": len(kept),
        "modules_unavailable": unavailable,
        "initramfs_modules": initramfs_modules,
        "initramfs_bytes": ctx.path("initrd.img").stat().st_size,
    }


def prune(ctx: BuildContext) -> None:
    """Documentation, locales, headers, static libraries, test suites (plus --prune globs)."""
    patterns = [*ctx.settings.content.prune, *ctx.settings.extra_prune]
    ctx.facts["pruned_bytes"] = rootfs.prune(ctx.rootfs, patterns)


def compile_bytecode(ctx: BuildContext) -> None:
    """Bytecode for the target's Python, compiled natively by the same version for the host."""
    host = ctx.path("host-python")
    loader = host / "usr/lib64/ld-linux-x86-64.so.2"
    python = [str(loader), "--library-path", str(host / "usr/lib/x86_64-linux-gnu"),
              str(host / "usr/bin/python3.13")]  # fmt: skip
    ctx.facts["pyc_files"] = rootfs.compile_bytecode(ctx.rootfs, python)


def run_gates(ctx: BuildContext) -> None:
    """Kernel config (check-config) and ELF audit; the build stops naming every offender."""
    assert ctx.kernel is not None
    board = ctx.settings.board
    kernel_gate = gates.check_kernel(
        ctx.rootfs, ctx.kernel.version, list(ctx.settings.content.required_modules)
    )
    elf_gate = elfaudit.audit(
        ctx.rootfs,
        ctx.owners,
        elf_class=board.elf_class,
        machine=board.elf_machine,
        triplet=board.triplet,
        hard_float=board.architecture == "armhf",
    )
    ctx.facts["gates"] = {"kernel": kernel_gate.as_dict(), "elf": elf_gate.as_dict()}
    problems = []
    if not kernel_gate.passed:
        details = [*kernel_gate.missing_modules, *kernel_gate.report.strip().splitlines()[-20:]]
        problems.append(f"kernel gate failed ({' '.join(kernel_gate.command)}):")
        problems += [f"  {line}" for line in details]
    problems += [f"ELF audit: {o}" for o in elf_gate.offenders]
    if problems:
        raise GateError(
            f"{ctx.settings.name}: the build stopped at its gates:\n  " + "\n  ".join(problems)
        )


STEPS: list[Callable[[BuildContext], None]] = [
    resolve_packages,
    fetch_packages,
    assemble_rootfs,
    configure_rootfs,
    install_firmware,
    install_container_images,
    install_kernel,
    prune,
    compile_bytecode,
    run_gates,
    assemble.boot_files,
    assemble.filesystems,
    assemble.disk_image,
    assemble.outputs,
]


def build(settings: BuildSettings, stream: TextIO = sys.stdout) -> BuildContext:
    """Run every step in order, printing each with its time; returns the finished context."""
    archive = debian.DebianArchive(
        settings.cache_dir,
        mirror=settings.mirror,
        suite=settings.suite,
        security_mirror=settings.security_mirror,
        refresh=settings.refresh_packages,
    )
    ctx = BuildContext(settings=settings, archive=archive)
    started = time.monotonic()
    print(f"k3py image build: {settings.name} ({settings.board.architecture})", file=stream)
    for step in STEPS:
        name = step.__name__.replace("_", "-")
        begin = time.monotonic()
        try:
            step(ctx)
        except ImageError:
            print(f"  {name:<26} failed after {time.monotonic() - begin:.1f}s", file=stream)
            raise
        ctx.timings[name] = round(time.monotonic() - begin, 2)
        print(f"  {name:<26} {ctx.timings[name]:6.1f}s", file=stream, flush=True)
    ctx.timings["total"] = round(time.monotonic() - started, 2)
    print(f"  {'total':<26} {ctx.timings['total']:6.1f}s", file=stream)
    return ctx
