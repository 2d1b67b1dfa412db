"""What a build is given (:class:`BuildSettings`, frozen) and what it carries between steps
(:class:`BuildContext`: the workspace, resolved packages, file owners, facts for the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3py.image import debian, kernel
from k3py.image.board import Board
from k3py.image.content import Content


@dataclass(frozen=True)
class BuildSettings:
    board: Board
    role: str
    out_dir: Path
    work_dir: Path
    cache_dir: Path
    content: Content
    source_date_epoch: int
    config_file: Path | None = None
    mirror: str = debian.DEFAULT_MIRROR
    security_mirror: str = debian.DEFAULT_SECURITY_MIRROR
    suite: str = debian.DEFAULT_SUITE
    refresh_packages: bool = False
    lock_file: Path | None = None
    overlay: Path | None = None
    extra_prune: tuple[str, ...] = ()
    container_images: tuple[Path, ...] = ()
    # The k3py wheel to install as firmware, or a source tree to build it from; None: the wheel
    # of the tree this k3py is installed from (editable), else of the installed k3py itself.
    firmware: Path | None = None
    # The OTA public key baked into the root slot; None: the image refuses every bundle.
    ota_key: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.board.name}-{self.role}"


@dataclass
class BuildContext:
    settings: BuildSettings
    archive: debian.DebianArchive
    packages: dict[str, list[debian.Package]] = field(default_factory=dict)
    debs: dict[str, Path] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    kernel: kernel.KernelTree | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.settings.work_dir / name

    @property
    def rootfs(self) -> Path:
        return self.path("rootfs")
