"""The flash pipeline, step by step: from an image file to a verified, personalised card.

Everything that can be refused is checked before the target is opened: the image's container,
its bmap (found beside it or named), the card settings, the target's safety, and the user's
confirmation. Then the target is opened exclusively and the steps run in order: write, sync,
verify (read back past the page cache), personalise (``k3py.yaml`` in the boot partition), sync.
A failure after writing has begun says that the card holds a partly written image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from k3py.image.bmap import Bmap, BmapError, human_size, read_bmap
from k3py.image.flash import personalise
from k3py.image.flash.errors import FlashError
from k3py.image.flash.progress import Progress
from k3py.image.flash.source import ImageInfo, inspect_image, measure_size, open_image, read_head
from k3py.image.flash.target import HostSystem, TargetHandle, TargetInfo, check_target
from k3py.image.flash.writer import plan_extents, verify_extents, write_extents

logger = logging.getLogger("k3py.flash")
COMPRESSED_SUFFIXES = (".zst", ".xz", ".gz")
DEFAULT_CHECKSUM = "sha256"
T = TypeVar("T")


@dataclass(frozen=True)
class FlashSettings:
    """Everything ``k3py flash`` was asked to do, parsed once at the command-line edge."""

    image: Path
    target: Path
    bmap: Path | None = None
    use_bmap: bool = True
    verify: bool = True
    allow_file: bool = False
    force: bool = False
    assume_yes: bool = False
    hostname: str | None = None
    config: Path | None = None


class Console(Protocol):
    """Where the pipeline talks to the person flashing: notes, a yes/no question, progress."""

    @property
    def interactive(self) -> bool: ...

    def say(self, line: str) -> None: ...

    def confirm(self, question: str) -> bool: ...

    def progress(self) -> Progress: ...


@dataclass
class FlashReport:
    image: ImageInfo
    image_size: int
    bmap: Path | None
    written: int = 0
    verified: bool = False
    config_text: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def bmap_candidates(image: Path) -> list[Path]:
    """Where a bmap is looked for: ``X.img.zst`` → ``X.img.bmap``, then ``X.bmap``."""
    name = image.name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    names = [name + ".bmap"]
    if name.endswith(".img"):
        names.append(name[: -len(".img")] + ".bmap")
    return [image.with_name(n) for n in names]


def load_bmap(settings: FlashSettings, info: ImageInfo) -> tuple[Path | None, Bmap | None]:
    """The bmap to use, checked against the image's size where the container records it."""
    if not settings.use_bmap:
        return None, None
    path = settings.bmap
    if path is None:
        path = next((p for p in bmap_candidates(settings.image) if p.is_file()), None)
        if path is None:
            return None, None
    try:
        bmap = read_bmap(path)
    except BmapError as err:
        raise FlashError(str(err)) from None
    if info.size is not None and info.size != bmap.image_size:
        raise FlashError(
            f"bmap {path} describes an image of {bmap.image_size} bytes, but {info.path} "
            f"unpacks to {info.size} bytes; it belongs to another image (name the right one "
            "with --bmap, or pass --no-bmap)"
        )
    return path, bmap


@contextmanager
def _step(report: FlashReport, name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        report.timings[name] = round(time.monotonic() - started, 3)


def _guarded(target: Path, action: Callable[[], T]) -> T:
    """Run a step that changes the card; an interrupt says what state the card is left in."""
    try:
        return action()
    except KeyboardInterrupt:
        raise FlashError(
            f"interrupted; {target} holds a partly written image, flash it again before use",
            exit_code=130,
        ) from None


def flash(
    settings: FlashSettings, console: Console, system: HostSystem | None = None
) -> FlashReport:
    """Write ``settings.image`` to ``settings.target``, verify it, and personalise the card."""
    system = system or HostSystem()

    # 1. What is being written: the image, its bmap, its size, and the card's settings.
    info = inspect_image(settings.image)
    bmap_path, bmap = load_bmap(settings, info)
    image_size = bmap.image_size if bmap else info.size
    if image_size is None:
        console.say(f"reading {info.path} once to learn its unpacked size")
        image_size = measure_size(info)
    if image_size % personalise.SECTOR:
        raise FlashError(
            f"{info.path} is not a disk image: {image_size} bytes is not a whole number of "
            f"{personalise.SECTOR}-byte sectors"
        )
    report = FlashReport(info, image_size, bmap_path)
    card = personalise.load_card_settings(settings.config, settings.hostname)
    boot = None
    if card is not None:
        boot = personalise.boot_partition(read_head(info, personalise.SECTOR), str(info.path))

    # 2. Where it goes: refuse an unsafe or unfit target, then ask.
    target = system.inspect(settings.target, image=settings.image)
    check_target(target, image_size, allow_file=settings.allow_file, force=settings.force)
    extents = plan_extents(bmap, image_size)
    to_write = sum(e.size for e in extents)
    mapped = f", bmap {bmap_path.name}: {human_size(to_write)} mapped" if bmap_path else ""
    console.say(f"image {info.path}: {info.describe()}, {human_size(image_size)}{mapped}")
    _confirm(settings, console, target)

    # 3. Write, verify, personalise; the target stays exclusively open throughout.
    checksum_type = (bmap.checksum_type if bmap else None) or DEFAULT_CHECKSUM
    handle = TargetHandle(target, image_size)
    try:
        progress = console.progress()
        with _step(report, "write"), open_image(info) as stream:
            digests = _guarded(
                settings.target,
                lambda: write_extents(
                    stream,
                    handle,
                    extents,
                    checksum_type=checksum_type,
                    image_size=image_size,
                    check_length=info.size is None,
                    progress=progress,
                ),
            )
            report.written = to_write
        with _step(report, "sync"):
            handle.sync()
        if settings.verify:
            with _step(report, "verify"):
                _guarded(
                    settings.target,
                    lambda: verify_extents(
                        handle, extents, digests, checksum_type=checksum_type, progress=progress
                    ),
                )
            report.verified = True
        if card is not None and boot is not None:
            with _step(report, "personalise"):
                report.config_text = _personalise(handle, boot.start, card)
            console.say(f"wrote {personalise.CONFIG_NAME} to boot partition {boot.number}")
        handle.reread_partitions()
    finally:
        handle.close()
    return report


def _confirm(settings: FlashSettings, console: Console, target: TargetInfo) -> None:
    if settings.assume_yes or (target.device is None and not target.exists):
        return
    question = f"overwrite {target.describe()}? Everything on it will be lost."
    if not console.interactive:
        raise FlashError(
            f"not overwriting {settings.target} without confirmation: pass --yes "
            "(there is no terminal to ask on)"
        )
    if not console.confirm(question):
        raise FlashError(f"not overwriting {settings.target}: not confirmed")


def _personalise(handle: TargetHandle, offset: int, card: personalise.CardSettings) -> str:
    boot_files = personalise.MtoolsBootFiles(handle.path, offset)
    text = personalise.write_card_config(boot_files, card)
    # mtools wrote through the page cache: flush it, drop it, and read the file back for real.
    handle.sync()
    personalise.confirm_card_config(boot_files, text)
    return text
