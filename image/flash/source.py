"""Reading a disk image as one forward stream of bytes, raw or compressed (zstd, xz, gzip).

The format is recognised by its magic bytes, not its name. Before anything is written, the
compressed container's structure is checked where the format allows it without decompressing:
zstd frames and blocks are walked header by header, and xz streams are checked from their
footers and indexes. A truncated download is thus refused before a card is touched, and the
uncompressed size is known when the container records it. gzip records neither, so a gzip image
is checked while it is read. Decompression streams through bounded buffers; nothing is unpacked
to disk.
"""

from __future__ import annotations

import gzip
import lzma
import mmap
import os
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from k3py.errors import MissingExtra
from k3py.image.flash.errors import FlashError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
_SKIP_CHUNK = 4 << 20


@dataclass(frozen=True)
class ImageInfo:
    """An image file: how it is packed and, when knowable up front, its unpacked size."""

    path: Path
    compression: str  # "raw", "zstd", "xz" or "gzip"
    file_size: int
    size: int | None

    def describe(self) -> str:
        return "raw" if self.compression == "raw" else f"{self.compression}-compressed"


class _Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def close(self) -> None: ...


def _truncated(path: Path, detail: str) -> FlashError:
    return FlashError(
        f"{path} is truncated or damaged ({detail}); download or build it again, nothing was "
        "written"
    )


def _zstd_size(data: mmap.mmap, path: Path) -> int | None:
    """Walk zstd frames and blocks by their headers; the content size if every frame has one."""
    end = len(data)
    pos, total, frames = 0, 0, 0
    complete_sizes = True
    while pos < end:
        if pos + 4 > end:
            raise _truncated(path, f"a frame header is cut off at byte {pos}")
        magic = int.from_bytes(data[pos : pos + 4], "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # skippable frame: magic, 4-byte length, payload
            if pos + 8 > end:
                raise _truncated(path, f"a skippable frame is cut off at byte {pos}")
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
            if pos > end:
                raise _truncated(path, "a skippable frame runs past the end of the file")
            continue
        if magic != 0xFD2FB528:
            raise _truncated(path, f"no zstd frame at byte {pos}")
        if pos + 5 > end:
            raise _truncated(path, f"frame {frames + 1} header is cut off")
        descriptor = data[pos + 4]
        single_segment = bool(descriptor & 0x20)
        has_checksum = bool(descriptor & 0x04)
        dictionary_bytes = (0, 1, 2, 4)[descriptor & 0x03]
        size_bytes = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
        size_at = pos + 5 + (0 if single_segment else 1) + dictionary_bytes
        pos = size_at + size_bytes
        if pos > end:
            raise _truncated(path, f"frame {frames + 1} header is cut off")
        if size_bytes:
            content = int.from_bytes(data[size_at:pos], "little")
            total += content + 256 if size_bytes == 2 else content
        else:
            complete_sizes = False
        while True:  # blocks: 3-byte header (last flag, type, size), then the block's bytes
            if pos + 3 > end:
                raise _truncated(path, f"frame {frames + 1} ends before its last block")
            header = int.from_bytes(data[pos : pos + 3], "little")
            block_type, block_size = (header >> 1) & 0x03, header >> 3
            if block_type == 3:
                raise _truncated(path, f"invalid zstd block at byte {pos}")
            pos += 3 + (1 if block_type == 1 else block_size)
            if header & 0x01:
                break
        pos += 4 if has_checksum else 0
        if pos > end:
            raise _truncated(path, f"frame {frames + 1} is cut off")
        frames += 1
    if frames == 0:
        raise _truncated(path, "no zstd frame in it")
    return total if complete_sizes else None


def _xz_varint(data: mmap.mmap, pos: int, limit: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < limit and shift < 63:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad variable-length integer")


def _xz_size(data: mmap.mmap, path: Path) -> int:
    """Check each xz stream from its footer back to its header; the sum of the indexes' sizes."""
    end, total = len(data), 0
    while end > 0:
        while end >= 4 and data[end - 4 : end] == b"\0\0\0\0":  # stream padding
            end -= 4
        if end < 24 or data[end - 2 : end] != b"YZ":
            raise _truncated(path, "the xz stream footer is missing")
        footer = data[end - 12 : end]
        if zlib.crc32(footer[4:10]) != int.from_bytes(footer[0:4], "little"):
            raise _truncated(path, "the xz stream footer is damaged")
        index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
        index_start = end - 12 - index_size
        if index_start < 12 or data[index_start] != 0:
            raise _truncated(path, "the xz index is missing")
        index_end = end - 12
        if zlib.crc32(data[index_start : index_end - 4]) != int.from_bytes(
            data[index_end - 4 : index_end], "little"
        ):
            raise _truncated(path, "the xz index is damaged")
        try:
            records, pos = _xz_varint(data, index_start + 1, index_end)
            blocks_size = 0
            for _ in range(records):
                unpadded, pos = _xz_varint(data, pos, index_end)
                uncompressed, pos = _xz_varint(data, pos, index_end)
                blocks_size += (unpadded + 3) & ~3
                total += uncompressed
        except ValueError:
            raise _truncated(path, "the xz index is damaged") from None
        start = index_start - blocks_size - 12
        if start < 0 or data[start : start + 6] != XZ_MAGIC:
            raise _truncated(path, "an xz stream's blocks do not match its index")
        end = start
    return total


def inspect_image(path: Path) -> ImageInfo:
    """Recognise an image's packing and check its container; refuse what cannot be read."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FlashError(f"image {path} is not a regular file")
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(6)
            if size == 0:
                raise FlashError(f"image {path} is empty")
            if head.startswith(ZSTD_MAGIC) or head.startswith(XZ_MAGIC):
                with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    if head.startswith(ZSTD_MAGIC):
                        return ImageInfo(path, "zstd", size, _zstd_size(data, path))
                    return ImageInfo(path, "xz", size, _xz_size(data, path))
    except OSError as err:
        raise FlashError(f"cannot read image {path}: {err.strerror}") from None
    if head.startswith(GZIP_MAGIC):
        return ImageInfo(path, "gzip", size, None)
    return ImageInfo(path, "raw", size, size)


class ImageStream:
    """The unpacked image, read forward only: :meth:`readinto` fills, :meth:`skip_to` jumps."""

    def __init__(self, info: ImageInfo) -> None:
        self.info = info
        self.position = 0
        self._file: BinaryIO | None = None
        self._reader: _Readable
        try:
            if info.compression == "raw":
                # Unbuffered, so reads land straight in the caller's aligned buffers.
                self._reader = self._raw = info.path.open("rb", buffering=0)
                return
            self._file = info.path.open("rb")
            if info.compression == "zstd":
                try:
                    import zstandard
                except ImportError:
                    self._file.close()
                    raise MissingExtra("reading .zst images", "image", "zstandard") from None
                self._reader = zstandard.ZstdDecompressor().stream_reader(
                    self._file, read_size=1 << 20, read_across_frames=True, closefd=False
                )
            elif info.compression == "xz":
                self._reader = lzma.LZMAFile(self._file)  # noqa: SIM115 (closed by close())
            else:
                self._reader = gzip.GzipFile(fileobj=self._file, mode="rb")
        except OSError as err:
            self.close()
            raise FlashError(f"cannot read image {info.path}: {err.strerror}") from None

    def _fail(self, err: Exception) -> FlashError:
        if isinstance(err, EOFError):
            return _truncated(self.info.path, f"the compressed data ends early: {err}")
        return FlashError(
            f"cannot read image {self.info.path} at unpacked byte {self.position}: {err}"
        )

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from the current position; fewer bytes only at the image's end."""
        filled = 0
        while filled < len(buffer):
            try:
                count = self._reader.readinto(buffer[filled:])
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as err:
                raise self._fail(err) from None
            except Exception as err:
                # zstandard raises its own ZstdError for corrupt frames.
                if type(err).__name__ == "ZstdError":
                    raise self._fail(err) from None
                raise
            if not count:
                break
            filled += count
            self.position += count
        return filled

    def skip_to(self, offset: int, scratch: memoryview) -> None:
        """Move forward to ``offset``; raw images seek, compressed ones decompress and discard."""
        if offset < self.position:
            raise ValueError(f"cannot go back from {self.position} to {offset}")
        if self.info.compression == "raw":
            self._raw.seek(offset)
            self.position = offset
            return
        while self.position < offset:
            want = min(len(scratch), offset - self.position)
            if self.readinto(scratch[:want]) < want:
                raise _truncated(
                    self.info.path, f"the image ends at byte {self.position}, before {offset}"
                )

    def close(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
        if self._file is not None:
            self._file.close()


@contextmanager
def open_image(info: ImageInfo) -> Iterator[ImageStream]:
    stream = ImageStream(info)
    try:
        yield stream
    finally:
        stream.close()


def measure_size(info: ImageInfo) -> int:
    """Unpack the whole image once to learn its size (gzip, or zstd without sizes)."""
    scratch = mmap.mmap(-1, _SKIP_CHUNK)
    try:
        with open_image(info) as stream, memoryview(scratch) as view:
            while stream.readinto(view) == len(view):
                pass
            return stream.position
    finally:
        scratch.close()


def read_head(info: ImageInfo, size: int) -> bytes:
    """The first ``size`` unpacked bytes (the partition table lives there)."""
    buffer = bytearray(size)
    with open_image(info) as stream:
        count = stream.readinto(memoryview(buffer))
    return bytes(buffer[:count])
