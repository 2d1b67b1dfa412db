"""Copying an image's extents to the target and reading them back to verify them.

An extent is a byte span of the image with a name a person can look up (a bmap's "blocks
2048-9000", or "bytes 0-67108863" without a bmap) and, from a bmap, its expected checksum. While
writing, a reader thread unpacks the image into a small pool of page-aligned buffers (direct I/O
needs them) and checksums each extent; the main thread writes the buffers out, so
decompression and device writes overlap. Verifying reads every extent back from the device and
compares its checksum with the one computed while writing. A mismatch on either side ends in a
:class:`FlashError` that names the extent.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass

from k3py.image.bmap import Bmap
from k3py.image.flash.errors import FlashError
from k3py.image.flash.progress import Progress
from k3py.image.flash.source import ImageStream
from k3py.image.flash.target import TargetHandle

CHUNK = 8 << 20
BUFFERS = 5
# Without a bmap the image is checksummed in pieces of this size, so a mismatch names a span.
UNMAPPED_EXTENT = 64 << 20


@dataclass(frozen=True)
class Extent:
    start: int
    end: int
    name: str
    expected: str | None = None

    @property
    def size(self) -> int:
        return self.end - self.start

    def label(self) -> str:
        return f"{self.name} (bytes {self.start}-{self.end - 1})"


def plan_extents(bmap: Bmap | None, image_size: int) -> tuple[Extent, ...]:
    """What to write: the bmap's ranges, or the whole image in fixed pieces."""
    if bmap is not None:
        return tuple(
            Extent(*bmap.byte_span(r), name=r.label(), expected=r.checksum) for r in bmap.ranges
        )
    return tuple(
        Extent(start, min(start + UNMAPPED_EXTENT, image_size), name="image")
        for start in range(0, image_size, UNMAPPED_EXTENT)
    )


@dataclass
class _Chunk:
    offset: int
    length: int
    buffer: mmap.mmap


class _Stop(Exception):
    """The consumer gave up; the producer thread ends quietly."""


class _Pipeline:
    """A producer thread filling pooled buffers, consumed in order by the calling thread."""

    def __init__(self, produce: Callable[[_Pipeline], None]) -> None:
        self._buffers = [mmap.mmap(-1, CHUNK) for _ in range(BUFFERS)]
        self._free: queue.Queue[mmap.mmap | None] = queue.Queue()
        for buffer in self._buffers:
            self._free.put(buffer)
        self._filled: queue.Queue[_Chunk | BaseException | None] = queue.Queue()
        self._produce = produce
        self._thread = threading.Thread(target=self._run, name="flash-reader", daemon=True)

    def acquire(self) -> mmap.mmap:
        buffer = self._free.get()
        if buffer is None:
            raise _Stop
        return buffer

    def emit(self, chunk: _Chunk) -> None:
        self._filled.put(chunk)

    def release(self, buffer: mmap.mmap) -> None:
        self._free.put(buffer)

    def _run(self) -> None:
        try:
            self._produce(self)
            self._filled.put(None)
        except _Stop:
            pass
        except BaseException as err:  # handed to the consuming thread, which raises it
            self._filled.put(err)

    def chunks(self) -> Generator[_Chunk, None, None]:
        self._thread.start()
        try:
            while True:
                item = self._filled.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._free.put(None)
            self._thread.join()
            for buffer in self._buffers:
                # A view may live on in a traceback being raised; then the collector frees it.
                with contextlib.suppress(BufferError):
                    buffer.close()


def _checksum_mismatch(extent: Extent, actual: str, expected: str, what: str) -> str:
    return f"{what} {extent.label()}: checksum {actual[:16]}… where {expected[:16]}… was expected"


def write_extents(
    stream: ImageStream,
    target: TargetHandle,
    extents: tuple[Extent, ...],
    *,
    checksum_type: str,
    image_size: int,
    check_length: bool,
    progress: Progress,
) -> list[str]:
    """Write the extents; return each one's checksum as computed from the image data.

    With ``check_length`` the image is read to its end after the last extent, so a truncated
    or overlong compressed image (whose size the container does not record) is caught.
    """
    digests: list[str] = []

    def produce(pipe: _Pipeline) -> None:
        scratch = pipe.acquire()
        try:
            for extent in extents:
                digests.append(copy_extent(pipe, extent, scratch))
            if check_length:
                with memoryview(scratch) as view:
                    stream.skip_to(max(stream.position, image_size), view)
                    extra = stream.readinto(view[:1])
                if extra:
                    raise FlashError(
                        f"image {stream.info.path} is longer than the {image_size} bytes its "
                        "bmap describes; the bmap belongs to another image"
                    )
        except FlashError as err:
            raise FlashError(
                f"{err}; {target.path} holds a partly written image, flash it again before use"
            ) from None
        finally:
            pipe.release(scratch)

    def copy_extent(pipe: _Pipeline, extent: Extent, scratch: mmap.mmap) -> str:
        with memoryview(scratch) as view:
            stream.skip_to(extent.start, view)
        digest = hashlib.new(checksum_type)
        offset = extent.start
        while offset < extent.end:
            buffer = pipe.acquire()
            length = min(CHUNK, extent.end - offset)
            with memoryview(buffer) as view:
                got = stream.readinto(view[:length])
                digest.update(view[:got])
            if got < length:
                pipe.release(buffer)
                raise FlashError(
                    f"image {stream.info.path} ends at byte {offset + got}, inside "
                    f"{extent.label()}: it is truncated, or the bmap belongs to another image"
                )
            pipe.emit(_Chunk(offset, length, buffer))
            offset += length
        actual = digest.hexdigest()
        if extent.expected is not None and actual != extent.expected:
            raise FlashError(
                _checksum_mismatch(extent, actual, extent.expected, "image data in")
                + " by the bmap: the image is damaged, or the bmap belongs to another image"
            )
        return actual

    progress.start("writing", sum(e.size for e in extents))
    pipe = _Pipeline(produce)
    try:
        # closing(): a failed write stops and joins the reader thread at once.
        with contextlib.closing(pipe.chunks()) as chunks:
            for chunk in chunks:
                with memoryview(chunk.buffer) as view:
                    target.write(chunk.offset, view[: chunk.length])
                # Only a written buffer goes back to the pool: the reader never refills it early.
                pipe.release(chunk.buffer)
                progress.advance(chunk.length)
    except BaseException:
        progress.finish(ok=False)
        raise
    progress.finish()
    return digests


def verify_extents(
    target: TargetHandle,
    extents: tuple[Extent, ...],
    digests: list[str],
    *,
    checksum_type: str,
    progress: Progress,
) -> None:
    """Read every extent back from the target and compare it with what was written."""
    progress.start("verifying", sum(e.size for e in extents))
    buffer = mmap.mmap(-1, CHUNK)
    try:
        _verify(target, extents, digests, checksum_type, progress, buffer)
    except BaseException:
        progress.finish(ok=False)
        raise
    finally:
        with contextlib.suppress(BufferError):
            buffer.close()
    progress.finish()


def _verify(
    target: TargetHandle,
    extents: tuple[Extent, ...],
    digests: list[str],
    checksum_type: str,
    progress: Progress,
    buffer: mmap.mmap,
) -> None:
    for extent, expected in zip(extents, digests, strict=True):
        digest = hashlib.new(checksum_type)
        offset = extent.start
        while offset < extent.end:
            length = min(CHUNK, extent.end - offset)
            got = target.read(offset, length, buffer)
            if got < length:
                raise FlashError(
                    f"{target.path} ends at byte {offset + got} while reading back "
                    f"{extent.label()}; the card is smaller than it claims"
                )
            with memoryview(buffer) as view:
                digest.update(view[:length])
            offset += length
            progress.advance(length)
        actual = digest.hexdigest()
        if actual != expected:
            raise FlashError(
                "verification failed: "
                + _checksum_mismatch(extent, actual, expected, f"{target.path} holds")
                + "; the card does not keep what was written (try another card or reader)"
            )
