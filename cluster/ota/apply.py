"""A node takes a firmware bundle: download, verify, install, in the phases a plan shows.

:func:`apply_firmware` is what the agent runs for its node's entry of an UpdatePlan. It reports
each phase through ``report`` (``Downloading``, ``Verifying``, ``Installing``) and changes
nothing on the board before the bundle has passed every check of
:func:`k3py.cluster.ota.bundle.verify`; a refusal raises :class:`BundleError` whose message is
the reason the plan's status shows. After a successful install the caller exits with
:data:`k3py.cluster.ota.launcher.RESTART`, and the launcher starts the new version on trial.
"""

from __future__ import annotations

import platform
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from k3py.cluster.agent.node.machine import BOARD_FILE, board_name
from k3py.cluster.ota import download
from k3py.cluster.ota.bundle import BundleError, Manifest, Running, load_public_key, verify
from k3py.cluster.ota.firmware import Firmware
from k3py.cluster.ota.rollout import DOWNLOADING, INSTALLING, VERIFYING

# Debian's architecture names, which bundles use, for Python's machine names.
DEBIAN_ARCHITECTURES = {"aarch64": "arm64", "armv7l": "armhf", "armv6l": "armhf",
                        "x86_64": "amd64"}  # fmt: skip


def running_system(version: str, board_file: Path = BOARD_FILE) -> Running:
    """The running version, this machine's Debian architecture and the image's board name
    ("unknown" off an image: bundles naming boards then refuse, those naming none fit)."""
    machine = platform.machine()
    board = board_name(board_file) or "unknown"
    return Running(version, DEBIAN_ARCHITECTURES.get(machine, machine), board)


async def apply_firmware(
    session: aiohttp.ClientSession,
    url: str,
    work_dir: Path,
    firmware: Firmware,
    running: Running,
    *,
    key_path: Path,
    report: Callable[[str], Awaitable[None]],
) -> Manifest:
    """Download the bundle at ``url`` (resuming), verify it, install its wheel beside."""
    key = load_public_key(key_path)  # a system without a key refuses before downloading
    work_dir.mkdir(parents=True, exist_ok=True)
    bundle = work_dir / Path(url).name
    await report(DOWNLOADING)
    await download.download(session, url, bundle)
    await report(VERIFYING)
    try:
        manifest = verify(bundle, key, running, kind="firmware")
    except BundleError:
        bundle.unlink()  # a bad download is not resumed from
        raise
    await report(INSTALLING)
    wheel = manifest.payload("wheel")
    with tarfile.open(bundle, "r:") as archive:
        member = archive.getmember(wheel.name)
        source = archive.extractfile(member)
        if source is None:
            raise BundleError(f"the bundle's {wheel.name} is not a file")
        extracted = work_dir / wheel.name
        extracted.write_bytes(source.read())
    try:
        firmware.install(extracted, manifest.version)
    finally:
        extracted.unlink(missing_ok=True)
    bundle.unlink()
    return manifest
