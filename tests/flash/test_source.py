"""Image sources: packing recognised by content, containers checked before anything is written."""

from __future__ import annotations

import gzip
import io
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from k3py.image.flash.errors import FlashError
from k3py.image.flash.source import ImageInfo, inspect_image, measure_size, open_image

# Mostly zeros with some random data: how disk images look to a compressor.
DATA = os.urandom(300_000) + bytes(2_000_000) + os.urandom(50_000)


def unpack(info: ImageInfo) -> bytes:
    out = bytearray(len(DATA) + 4096)
    with open_image(info) as stream:
        count = stream.readinto(memoryview(out))
    return bytes(out[:count])


def zstd_without_size(data: bytes) -> bytes:
    """zstd as a pipe makes it: the frame header does not record the content size."""
    sink = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(sink, closefd=False) as writer:
        writer.write(data)
    return sink.getvalue()


def test_raw_image(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(DATA)

    info = inspect_image(path)

    assert (info.compression, info.size) == ("raw", len(DATA))
    assert unpack(info) == DATA


@pytest.mark.parametrize(
    ("name", "pack", "compression"),
    [
        ("disk.img.zst", lambda d: zstandard.ZstdCompressor().compress(d), "zstd"),
        ("disk.img.xz", lzma.compress, "xz"),
        ("disk.img.gz", gzip.compress, "gzip"),
        # The name does not decide the format; the content does.
        ("misnamed.img", lzma.compress, "xz"),
    ],
)
def test_compressed_images_unpack_as_one_stream(
    tmp_path: Path, name: str, pack: Callable[[bytes], bytes], compression: str
) -> None:
    path = tmp_path / name
    path.write_bytes(pack(DATA))

    info = inspect_image(path)

    assert info.compression == compression
    assert info.size == (None if compression == "gzip" else len(DATA))
    assert unpack(info) == DATA
    assert measure_size(info) == len(DATA)


def test_sizes_of_several_frames_and_streams_add_up(tmp_path: Path) -> None:
    zst = tmp_path / "multi.img.zst"
    zst.write_bytes(
        zstandard.ZstdCompressor().compress(DATA) + zstandard.ZstdCompressor().compress(DATA)
    )
    xz = tmp_path / "multi.img.xz"
    xz.write_bytes(lzma.compress(DATA) + lzma.compress(DATA) + bytes(8))  # with stream padding

    assert inspect_image(zst).size == 2 * len(DATA)
    assert inspect_image(xz).size == 2 * len(DATA)
    assert measure_size(inspect_image(zst)) == 2 * len(DATA)


def test_zstd_without_recorded_size_is_measured(tmp_path: Path) -> None:
    path = tmp_path / "piped.img.zst"
    path.write_bytes(zstd_without_size(DATA))

    info = inspect_image(path)

    assert info.size is None
    assert measure_size(info) == len(DATA)


@pytest.mark.parametrize("keep", [0.01, 0.5, 0.99])
@pytest.mark.parametrize("suffix", [".zst", ".xz"])
def test_truncated_zstd_and_xz_are_refused_up_front(
    tmp_path: Path, suffix: str, keep: float
) -> None:
    packed = zstandard.ZstdCompressor().compress(DATA) if suffix == ".zst" else lzma.compress(DATA)
    path = tmp_path / f"cut.img{suffix}"
    path.write_bytes(packed[: max(6, int(len(packed) * keep))])

    with pytest.raises(FlashError, match="truncated or damaged"):
        inspect_image(path)


def test_truncated_zstd_without_sizes_is_refused_up_front(tmp_path: Path) -> None:
    packed = zstd_without_size(DATA)
    path = tmp_path / "cut.img.zst"
    path.write_bytes(packed[:-3])

    with pytest.raises(FlashError, match="truncated"):
        inspect_image(path)


def test_truncated_gzip_fails_while_reading(tmp_path: Path) -> None:
    packed = gzip.compress(DATA)
    path = tmp_path / "cut.img.gz"
    path.write_bytes(packed[: len(packed) // 2])
    info = inspect_image(path)

    with pytest.raises(FlashError, match="truncated"):
        measure_size(info)


def test_corrupt_zstd_data_fails_with_the_position(tmp_path: Path) -> None:
    packed = bytearray(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(DATA))
    for index in range(200, 260):  # inside the first compressed block
        packed[index] ^= 0x5A
    path = tmp_path / "bad.img.zst"
    path.write_bytes(bytes(packed))
    info = inspect_image(path)

    with pytest.raises(FlashError, match="cannot read image"):
        unpack(info)


def test_skip_to_moves_forward_only(tmp_path: Path) -> None:
    path = tmp_path / "disk.img.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(DATA))
    scratch = bytearray(65536)
    out = bytearray(16)

    with open_image(inspect_image(path)) as stream:
        stream.skip_to(2_310_000, memoryview(scratch))
        stream.readinto(memoryview(out))
        with pytest.raises(ValueError, match="cannot go back"):
            stream.skip_to(10, memoryview(scratch))

    assert bytes(out) == DATA[2_310_000:2_310_016]


def test_empty_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.img"
    path.touch()

    with pytest.raises(FlashError, match="empty"):
        inspect_image(path)
