"""Images built once per test session and shared by the image and QEMU tiers.

Each (board, role) is built at most once per pytest session, into the session's temporary
directory, through the real ``k3py image build`` pipeline; the results are kept in the session's
``config.stash`` (no module state). The package cache is the machine's shared one
(``/var/cache/k3py/packages``, or ``K3PY_CACHE_DIR``), so only a cold machine downloads.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from k3py.image import firmware
from k3py.image.board import load_board
from k3py.image.cli import DEFAULT_CACHE, DEFAULT_EPOCH
from k3py.image.content import load_content
from k3py.image.context import BuildContext, BuildSettings
from k3py.image.pipeline import build


@dataclass(frozen=True)
class BuiltImage:
    board: str
    role: str
    out_dir: Path
    work_dir: Path
    log: str
    seconds: float

    @property
    def image(self) -> Path:
        return self.out_dir / f"{self.board}-{self.role}.img"

    @property
    def manifest(self) -> Path:
        return self.out_dir / f"{self.board}-{self.role}.manifest.json"


ImageFor = Callable[[str, str], BuiltImage]
# Agents are built with a baked-in k3py.yaml (--config): a server address that QEMU's user
# network maps to the host's loopback, where nothing listens on the discard port, so a booted
# agent keeps retrying its join (as a board whose server is not up yet) instead of exiting.
AGENT_CONFIG = """\
role: agent
server: https://10.0.2.2:9
token: K10{ca_hash}::server:image-tier-test
node-name: qemu-agent
""".format(ca_hash="0" * 64)
FIRMWARE_KEY = pytest.StashKey[Path]()
BUILDS_KEY = pytest.StashKey[dict[tuple[str, str], BuiltImage]]()


def cache_dir() -> Path:
    return Path(os.environ.get("K3PY_CACHE_DIR", DEFAULT_CACHE))


def settings_for(
    board: str,
    role: str,
    root: Path,
    *,
    overlay: Path | None = None,
    extra_prune: tuple[str, ...] = (),
    config_file: Path | None = None,
    firmware_wheel: Path | None = None,
) -> BuildSettings:
    return BuildSettings(
        board=load_board(board),
        role=role,
        out_dir=root / "out",
        work_dir=root / "work",
        cache_dir=cache_dir(),
        content=load_content(),
        source_date_epoch=DEFAULT_EPOCH,
        overlay=overlay,
        extra_prune=extra_prune,
        config_file=config_file,
        firmware=firmware_wheel,
    )


def run_build(settings: BuildSettings) -> tuple[BuildContext, str, float]:
    stream = io.StringIO()
    started = time.monotonic()
    context = build(settings, stream)
    return context, stream.getvalue(), time.monotonic() - started


def firmware_snapshot(request: pytest.FixtureRequest, tmp_factory: pytest.TempPathFactory) -> Path:
    """The session's one k3py wheel, built from the tree's tracked files: every image of the
    session (and the rebuild that must match one of them bit for bit) installs the same
    firmware, even while the working tree is being edited."""
    if FIRMWARE_KEY not in request.config.stash:
        wheel = firmware.firmware_wheel(None, cache_dir()).path
        target = tmp_factory.mktemp("firmware") / wheel.name
        shutil.copyfile(wheel, target)
        request.config.stash[FIRMWARE_KEY] = target
    return request.config.stash[FIRMWARE_KEY]


def built_image(
    request: pytest.FixtureRequest, tmp_factory: pytest.TempPathFactory, board: str, role: str
) -> BuiltImage:
    """The session's image for (board, role), built on first use."""
    builds = request.config.stash.setdefault(BUILDS_KEY, {})
    if (board, role) not in builds:
        root = tmp_factory.mktemp(f"{board}-{role}")
        config = None
        if role == "agent":
            config = root / "k3py.yaml"
            config.write_text(AGENT_CONFIG)
        settings = settings_for(
            board,
            role,
            root,
            config_file=config,
            firmware_wheel=firmware_snapshot(request, tmp_factory),
        )
        _, log, seconds = run_build(settings)
        builds[(board, role)] = BuiltImage(
            board, role, settings.out_dir, settings.work_dir, log, seconds
        )
    return builds[(board, role)]
