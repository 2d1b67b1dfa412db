"""The flash pipeline on image-file targets: no root, no loop devices, no system tools.

Images here are synthetic sparse files (an MBR and a few data regions); the loop-device tests
use real partitions and file systems.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import lzma
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from k3py.image.bmap import Bmap, create_bmap
from k3py.image.flash.errors import FlashError
from k3py.image.flash.flashing import FlashSettings, bmap_candidates, flash
from k3py.image.flash.source import inspect_image, open_image
from k3py.image.flash.target import TargetHandle
from k3py.image.flash.writer import plan_extents, write_extents
from tests.flash.fakes import FakeConsole, Recorder

MIB = 1 << 20
SIZE = 8 * MIB


def mbr_with_fat_partition() -> bytes:
    sector = bytearray(512)
    sector[446 + 4] = 0x0C
    sector[446 + 8 : 446 + 12] = (2048).to_bytes(4, "little")
    sector[446 + 12 : 446 + 16] = (4096).to_bytes(4, "little")
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def sparse_image(path: Path, pieces: dict[int, bytes], size: int = SIZE) -> bytes:
    with path.open("wb") as file:
        file.truncate(size)
        for offset, data in pieces.items():
            file.seek(offset)
            file.write(data)
    return path.read_bytes()


@dataclass(frozen=True)
class Synthetic:
    path: Path
    data: bytes
    bmap: Bmap


@pytest.fixture
def image(tmp_path: Path) -> Synthetic:
    path = tmp_path / "board.img"
    data = sparse_image(
        path,
        {
            0: mbr_with_fat_partition(),
            MIB: os.urandom(4096),
            3 * MIB + 12345: os.urandom(100_000),
            SIZE - 4096: os.urandom(4096),
        },
    )
    return Synthetic(path, data, create_bmap(path, tmp_path / "board.bmap"))


def pack(path: Path, how: str) -> Path:
    data = path.read_bytes()
    if how == "raw":
        return path
    if how == "zst":
        packed = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    elif how == "zst-unsized":
        sink = io.BytesIO()
        with zstandard.ZstdCompressor().stream_writer(sink, closefd=False) as writer:
            writer.write(data)
        packed = sink.getvalue()
    elif how == "xz":
        packed = lzma.compress(data, preset=0)
    else:
        packed = gzip.compress(data, compresslevel=1)
    out = path.with_name(path.name + {"zst-unsized": ".zst"}.get(how, "." + how))
    out.write_bytes(packed)
    return out


def settings(image: Path, target: Path, **options: Any) -> FlashSettings:
    unattended = FlashSettings(image=image, target=target, allow_file=True, assume_yes=True)
    return dataclasses.replace(unattended, **options)


@pytest.mark.parametrize("how", ["raw", "zst", "zst-unsized", "xz", "gz"])
@pytest.mark.parametrize("use_bmap", [True, False])
def test_flash_to_a_file_reproduces_the_image(
    image: Synthetic, tmp_path: Path, how: str, use_bmap: bool
) -> None:
    target = tmp_path / "card.img"
    console = FakeConsole()

    report = flash(settings(pack(image.path, how), target, use_bmap=use_bmap), console)

    assert target.read_bytes() == image.data
    written = image.bmap.mapped_size if use_bmap else SIZE
    assert console.recorder.stages == [("writing", written), ("verifying", written)]
    assert report.verified
    assert report.written == written
    assert set(report.timings) >= {"write", "sync", "verify"}


def test_bmap_is_found_beside_a_compressed_image(image: Synthetic) -> None:
    packed = pack(image.path, "zst")

    report = flash(settings(packed, image.path.with_name("card.img")), FakeConsole())

    assert report.bmap == image.path.with_name("board.bmap")
    assert bmap_candidates(Path("out/x.img.zst")) == [Path("out/x.img.bmap"), Path("out/x.bmap")]
    assert bmap_candidates(Path("x.raw")) == [Path("x.raw.bmap")]


def test_bmap_of_a_different_size_is_refused_before_writing(
    image: Synthetic, tmp_path: Path
) -> None:
    small = tmp_path / "small.img"
    sparse_image(small, {0: b"x"}, size=4 * MIB)
    create_bmap(small, tmp_path / "small.bmap")
    target = tmp_path / "card.img"

    with pytest.raises(FlashError, match="describes an image of 4194304 bytes"):
        flash(settings(image.path, target, bmap=tmp_path / "small.bmap"), FakeConsole())

    assert not target.exists()


def test_bmap_of_another_image_of_the_same_size_fails_naming_the_range(
    image: Synthetic, tmp_path: Path
) -> None:
    other = tmp_path / "other.img"
    sparse_image(other, {0: mbr_with_fat_partition(), MIB: os.urandom(4096)})
    create_bmap(other, tmp_path / "other.bmap")

    with pytest.raises(FlashError) as failure:
        flash(
            settings(image.path, tmp_path / "card.img", bmap=tmp_path / "other.bmap"),
            FakeConsole(),
        )

    message = str(failure.value)
    assert "image data in block 256 (bytes 1048576-1052671)" in message
    assert "partly written" in message


def test_truncated_gzip_says_the_card_is_partly_written(image: Synthetic, tmp_path: Path) -> None:
    packed = pack(image.path, "gz")
    packed.write_bytes(packed.read_bytes()[:-1000])

    with pytest.raises(FlashError) as failure:
        flash(settings(packed, tmp_path / "card.img"), FakeConsole())

    assert "truncated" in str(failure.value)
    assert "partly written" in str(failure.value)


def test_read_back_mismatch_fails_verification(image: Synthetic, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    last = image.bmap.ranges[-1]

    def damage(stage: str) -> None:
        if stage == "verifying":
            with target.open("r+b") as file:
                file.seek(last.first * 4096 + 10)
                file.write(b"\xff\x00")

    console = FakeConsole(recorder=Recorder(on_start=damage))

    with pytest.raises(FlashError) as failure:
        flash(settings(image.path, target), console)

    assert str(failure.value).startswith(
        f"verification failed: {target} holds {last.label()} (bytes"
    )


def test_no_verify_skips_the_read_back(image: Synthetic, tmp_path: Path) -> None:
    console = FakeConsole()

    report = flash(settings(image.path, tmp_path / "card.img", verify=False), console)

    assert [stage for stage, _ in console.recorder.stages] == ["writing"]
    assert not report.verified


def test_overwriting_needs_confirmation(image: Synthetic, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    target.write_bytes(b"keep me")
    unattended = settings(image.path, target, assume_yes=False)

    with pytest.raises(FlashError, match="pass --yes"):
        flash(unattended, FakeConsole(is_interactive=False))
    declined = FakeConsole(is_interactive=True, answer=False)
    with pytest.raises(FlashError, match="not confirmed"):
        flash(unattended, declined)
    assert target.read_bytes() == b"keep me"
    assert declined.questions == [
        f"overwrite {target}: regular file? Everything on it will be lost."
    ]

    flash(unattended, FakeConsole(is_interactive=True, answer=True))
    assert target.read_bytes() == image.data


def test_non_disk_images_are_refused(tmp_path: Path) -> None:
    note = tmp_path / "node.yaml"
    note.write_text("role: agent\n")

    with pytest.raises(FlashError, match="not a disk image"):
        flash(settings(note, tmp_path / "card.img"), FakeConsole())


def test_personalising_needs_a_boot_partition_and_is_checked_first(tmp_path: Path) -> None:
    bare = tmp_path / "bare.img"
    sparse_image(bare, {4096: b"no partition table"})
    target = tmp_path / "card.img"

    with pytest.raises(FlashError, match="no MBR partition table"):
        flash(settings(bare, target, hostname="node1"), FakeConsole())
    with pytest.raises(FlashError, match="is not valid"):
        flash(settings(bare, target, hostname="Bad_Name"), FakeConsole())

    assert not target.exists()


class _FailingTarget(TargetHandle):
    """A target whose second write fails, as a card pulled out mid-write does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0

    def write(self, offset: int, data: memoryview) -> None:
        self.writes += 1
        if self.writes == 2:
            raise FlashError(f"writing {self.path} failed at byte {offset}: Input/output error")


def test_failed_write_stops_the_reader_thread(tmp_path: Path) -> None:
    path = tmp_path / "big.img"
    sparse_image(path, {0: os.urandom(64 * 1024)}, size=64 * MIB)
    extents = plan_extents(None, 64 * MIB)
    target = _FailingTarget(tmp_path / "card")

    with open_image(inspect_image(path)) as stream, pytest.raises(FlashError, match="I/O|Input"):
        write_extents(
            stream, target, extents, checksum_type="sha256", image_size=64 * MIB,
            check_length=False, progress=Recorder(),
        )  # fmt: skip

    assert target.writes == 2
    assert not [t for t in threading.enumerate() if t.name == "flash-reader"]
