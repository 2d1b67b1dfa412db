"""Block maps (bmap files) in bmaptool's format: which blocks of a sparse image hold data.

A disk image is mostly empty; its bmap lists the block ranges that hold data, each with a
checksum, so that flashing writes and verifies only those. :func:`create_bmap` writes format
2.0 with SHA-256 checksums in the same XML layout as ``bmaptool create``, finding the ranges
with ``SEEK_DATA``/``SEEK_HOLE`` plus the preallocated zeroed extents ``FIEMAP`` reports.
:func:`read_bmap` reads ours and bmaptool's (1.x with SHA-1, and 2.x), validating the checksum
of the bmap file itself as bmaptool does: the file is hashed with the ``BmapFileChecksum``
value replaced by ASCII zeros.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from k3py.errors import K3pyError

FORMAT_VERSION = "2.0"
BLOCK_SIZE = 4096
CHECKSUM_TYPE = "sha256"
# Newest major version this reader understands (bmaptool 3.x writes 2.0).
_SUPPORTED_MAJOR = 2
_READ_CHUNK = 4 << 20
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_LAST = 0x1
_FIEMAP_EXTENT_UNWRITTEN = 0x800

_HEADER = """<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"""


class BmapError(K3pyError):
    """A bmap file cannot be made or read; the message names the file and the problem."""


@dataclass(frozen=True)
class BlockRange:
    """Blocks ``first``..``last`` (inclusive) of an image, with their checksum if known."""

    first: int
    last: int
    checksum: str | None = None

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1

    def label(self) -> str:
        return (
            f"blocks {self.first}-{self.last}" if self.last != self.first else f"block {self.first}"
        )


@dataclass(frozen=True)
class Bmap:
    """A parsed or freshly written block map."""

    version: str
    image_size: int
    block_size: int
    blocks_count: int
    mapped_blocks_count: int
    checksum_type: str | None
    ranges: tuple[BlockRange, ...]

    @property
    def mapped_size(self) -> int:
        """Bytes of the image that the ranges cover (the last block may be partial)."""
        spans = (self.byte_span(r) for r in self.ranges)
        return sum(end - start for start, end in spans)

    def byte_span(self, block_range: BlockRange) -> tuple[int, int]:
        """The half-open byte interval ``[start, end)`` of a range inside the image."""
        start = block_range.first * self.block_size
        end = min((block_range.last + 1) * self.block_size, self.image_size)
        return start, end


def human_size(size: int) -> str:
    """Sizes as bmaptool prints them in its comments: ``1.5 GiB``."""
    if size == 1:
        return "1 byte"
    if size < 512:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} EiB"


def _data_spans(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Byte spans ``[start, end)`` that hold data, by ``SEEK_DATA``/``SEEK_HOLE``."""
    offset = 0
    while offset < size:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # no data after offset
                return
            raise
        if data >= size:
            return
        try:
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        except OSError as err:
            if err.errno != errno.ENXIO:
                raise
            hole = size
        yield data, hole
        offset = hole


def _zeroed_spans(fd: int, size: int) -> list[tuple[int, int]]:
    """Byte spans allocated but never written (``fallocate``'s zero range), by ``FIEMAP``.

    ``SEEK_DATA`` reports such extents as holes, yet the tool that made the image asked for
    zeros there: mke2fs zeroes the journal and wipes old RAID superblocks at the end of the
    disk this way. They must be written like data (bmaptool maps them too), or a card keeps
    whatever it held before in those places. Empty where ``FIEMAP`` is not supported.
    """
    header = struct.Struct("=QQLLLL")  # struct fiemap
    extent = struct.Struct("=QQQQQLLLL")  # struct fiemap_extent
    count = 256
    spans: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        request = bytearray(header.size + count * extent.size)
        header.pack_into(request, 0, offset, size - offset, _FIEMAP_FLAG_SYNC, 0, count, 0)
        try:
            fcntl.ioctl(fd, _FS_IOC_FIEMAP, request)
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                return []
            raise
        mapped = header.unpack_from(request, 0)[3]
        if mapped == 0:
            break
        last_flags = 0
        for index in range(mapped):
            logical, _, length, _, _, last_flags, *_ = extent.unpack_from(
                request, header.size + index * extent.size
            )
            if last_flags & _FIEMAP_EXTENT_UNWRITTEN:
                spans.append((logical, min(logical + length, size)))
            offset = logical + length
        if last_flags & _FIEMAP_EXTENT_LAST:
            break
    return spans


def mapped_ranges(fd: int, size: int, block_size: int = BLOCK_SIZE) -> Iterator[tuple[int, int]]:
    """Yield ``(first, last)`` block ranges of a file to be copied, merged where adjacent.

    These are the spans holding data plus those explicitly zeroed (see :func:`_zeroed_spans`);
    a span that starts or ends inside a block maps the whole block. A file system without hole
    support reports everything as data, which is correct, only not sparse.
    """
    spans = sorted([*_data_spans(fd, size), *_zeroed_spans(fd, size)])
    blocks = (size + block_size - 1) // block_size
    pending: tuple[int, int] | None = None
    for start, end in spans:
        if end <= start:
            continue
        first = start // block_size
        last = min((end + block_size - 1) // block_size, blocks) - 1
        if pending is not None and first <= pending[1] + 1:
            pending = (pending[0], max(pending[1], last))
            continue
        if pending is not None:
            yield pending
        pending = (first, last)
    if pending is not None:
        yield pending


def _range_digest(fd: int, start: int, end: int, checksum_type: str) -> str:
    digest = hashlib.new(checksum_type)
    offset = start
    while offset < end:
        chunk = os.pread(fd, min(_READ_CHUNK, end - offset), offset)
        if not chunk:
            raise BmapError(f"image ended at byte {offset} while reading it (was it truncated?)")
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def render_bmap(bmap: Bmap) -> str:
    """The XML text of a bmap in bmaptool's layout, with its file checksum filled in."""
    checksum_type = bmap.checksum_type or CHECKSUM_TYPE
    digest_length = len(hashlib.new(checksum_type).hexdigest())
    image_human = human_size(bmap.image_size)
    mapped_bytes = bmap.mapped_blocks_count * bmap.block_size
    percent = bmap.mapped_blocks_count * 100.0 / bmap.blocks_count
    # bmaptool reserves room for these numbers before it knows them; keep the same padding.
    mapped_comment = f"{human_size(mapped_bytes)} or {percent:.1f}%"
    mapped_comment = mapped_comment.ljust(len(image_human) + len(" or ") + len("100.0%"))
    mapped_count = str(bmap.mapped_blocks_count).ljust(len(str(bmap.blocks_count)))
    lines = [
        _HEADER.rstrip("\n"),
        "",
        f'<bmap version="{bmap.version}">',
        f"    <!-- Image size in bytes: {image_human} -->",
        f"    <ImageSize> {bmap.image_size} </ImageSize>",
        "",
        "    <!-- Size of a block in bytes -->",
        f"    <BlockSize> {bmap.block_size} </BlockSize>",
        "",
        "    <!-- Count of blocks in the image file -->",
        f"    <BlocksCount> {bmap.blocks_count} </BlocksCount>",
        "",
        f"    <!-- Count of mapped blocks: {mapped_comment}   -->",
        f"    <MappedBlocksCount> {mapped_count} </MappedBlocksCount>",
        "",
        "    <!-- Type of checksum used in this file -->",
        f"    <ChecksumType> {checksum_type} </ChecksumType>",
        "",
        "    <!-- The checksum of this bmap file. When it is calculated, the value of",
        '         the checksum has be zero (all ASCII "0" symbols).  -->',
        f"    <BmapFileChecksum> {'0' * digest_length} </BmapFileChecksum>",
        "",
        "    <!-- The block map which consists of elements which may either be a",
        "         range of blocks or a single block. The 'chksum' attribute",
        "         (if present) is the checksum of this blocks range. -->",
        "    <BlockMap>",
    ]
    for block_range in bmap.ranges:
        attribute = f' chksum="{block_range.checksum}"' if block_range.checksum else ""
        span = (
            f"{block_range.first}-{block_range.last}"
            if block_range.last != block_range.first
            else str(block_range.first)
        )
        lines.append(f"        <Range{attribute}> {span} </Range>")
    lines += ["    </BlockMap>", "</bmap>", ""]
    text = "\n".join(lines)
    file_digest = hashlib.new(checksum_type, text.encode()).hexdigest()
    return text.replace("0" * digest_length, file_digest, 1)


def create_bmap(image: Path, bmap: Path) -> Bmap:
    """Write the bmap of a sparse ``image`` to ``bmap`` (format 2.0, SHA-256) and return it.

    The file is replaced atomically, so a reader never sees half a bmap.
    """
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise BmapError(f"cannot open image {image}: {err.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise BmapError(f"cannot make a bmap of {image}: the image is empty")
        # Dirty pages of a freshly written image must reach the file system before holes are
        # asked for, or some file systems report still-buffered data as holes.
        os.fsync(fd)
        ranges = []
        for first, last in mapped_ranges(fd, size):
            start, end = first * BLOCK_SIZE, min((last + 1) * BLOCK_SIZE, size)
            ranges.append(BlockRange(first, last, _range_digest(fd, start, end, CHECKSUM_TYPE)))
    finally:
        os.close(fd)
    result = Bmap(
        version=FORMAT_VERSION,
        image_size=size,
        block_size=BLOCK_SIZE,
        blocks_count=(size + BLOCK_SIZE - 1) // BLOCK_SIZE,
        mapped_blocks_count=sum(r.blocks for r in ranges),
        checksum_type=CHECKSUM_TYPE,
        ranges=tuple(ranges),
    )
    text = render_bmap(result)
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=bmap.parent, prefix=f".{bmap.name}.", suffix=".tmp", delete=False
        ) as out:
            temporary = Path(out.name)
            out.write(text)
        temporary.chmod(0o644)
        temporary.replace(bmap)
    except OSError as err:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise BmapError(f"cannot write bmap {bmap}: {err.strerror}") from None
    return result


def _element_text(root: ElementTree.Element, tag: str, where: str) -> str:
    element = root.find(tag)
    if element is None or element.text is None or not element.text.strip():
        raise BmapError(f"{where}: <{tag}> is missing; is this a bmap file?")
    return element.text.strip()


def _element_int(root: ElementTree.Element, tag: str, where: str) -> int:
    text = _element_text(root, tag, where)
    try:
        value = int(text)
    except ValueError:
        raise BmapError(f"{where}: <{tag}> is {text!r}, not a number") from None
    if value < 0:
        raise BmapError(f"{where}: <{tag}> is negative ({value})")
    return value


def _verify_file_checksum(data: bytes, tag: str, checksum_type: str, where: str) -> None:
    match = re.search(rb"<%s>\s*([0-9a-fA-F]+)\s*</%s>" % (tag.encode(), tag.encode()), data)
    if match is None:
        raise BmapError(f"{where}: <{tag}> is missing or not a hex checksum")
    stored = match.group(1).decode().lower()
    zeroed = data[: match.start(1)] + b"0" * len(stored) + data[match.end(1) :]
    actual = hashlib.new(checksum_type, zeroed).hexdigest()
    if actual != stored:
        raise BmapError(
            f"{where}: the bmap file is damaged or was edited (its {checksum_type} is "
            f"{actual[:16]}…, it says {stored[:16]}…); get an intact copy or pass --no-bmap"
        )


def parse_bmap(data: bytes, where: str) -> Bmap:
    """Parse bmap XML text; ``where`` names its source in error messages."""
    try:
        # bmap files are local data the user chose; expat refuses entity expansion attacks.
        root = ElementTree.fromstring(data)  # noqa: S314
    except ElementTree.ParseError as err:
        raise BmapError(f"{where}: not a valid bmap file (XML error: {err})") from None
    if root.tag != "bmap":
        raise BmapError(f"{where}: not a bmap file (root element is <{root.tag}>)")
    version = root.attrib.get("version", "")
    if not re.fullmatch(r"\d+\.\d+", version):
        raise BmapError(f"{where}: bmap version {version!r} is not of the form major.minor")
    major, minor = (int(part) for part in version.split("."))
    if major > _SUPPORTED_MAJOR:
        raise BmapError(f"{where}: bmap format {version} is newer than this k3py understands")
    image_size = _element_int(root, "ImageSize", where)
    block_size = _element_int(root, "BlockSize", where)
    blocks_count = _element_int(root, "BlocksCount", where)
    mapped_count = _element_int(root, "MappedBlocksCount", where)
    if block_size == 0 or block_size % 512:
        raise BmapError(f"{where}: block size {block_size} is not a multiple of 512")
    if blocks_count != (image_size + block_size - 1) // block_size:
        raise BmapError(
            f"{where}: inconsistent bmap: {blocks_count} blocks of {block_size} bytes do not "
            f"make an image of {image_size} bytes"
        )

    # Format 1.3 introduced SHA-1 checksums; 1.4 (a mislabelled 2.0) and 2.x name the type.
    checksum_type: str | None
    if major >= 2 or (major == 1 and minor == 4):
        checksum_type, file_tag, range_attribute = (
            _element_text(root, "ChecksumType", where).lower(),
            "BmapFileChecksum",
            "chksum",
        )
    elif major == 1 and minor == 3:
        checksum_type, file_tag, range_attribute = "sha1", "BmapFileSHA1", "sha1"
    else:
        checksum_type, file_tag, range_attribute = None, "", ""
    if checksum_type is not None:
        if checksum_type not in hashlib.algorithms_available:
            raise BmapError(f"{where}: checksum type {checksum_type!r} is not supported")
        _verify_file_checksum(data, file_tag, checksum_type, where)

    block_map = root.find("BlockMap")
    if block_map is None:
        raise BmapError(f"{where}: <BlockMap> is missing")
    ranges: list[BlockRange] = []
    for element in block_map.findall("Range"):
        text = (element.text or "").strip()
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", text)
        if match is None:
            raise BmapError(f"{where}: range {text!r} is not 'first-last' or a block number")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if first > last or last >= blocks_count:
            raise BmapError(f"{where}: range {text} lies outside the image's {blocks_count} blocks")
        if ranges and first <= ranges[-1].last:
            raise BmapError(f"{where}: range {text} overlaps or precedes the range before it")
        checksum = element.attrib.get(range_attribute) if range_attribute else None
        if checksum is not None:
            checksum = checksum.strip().lower()
            if checksum_type is None or not re.fullmatch(r"[0-9a-f]+", checksum):
                raise BmapError(f"{where}: range {text} has a malformed checksum {checksum!r}")
            if len(checksum) != len(hashlib.new(checksum_type).hexdigest()):
                raise BmapError(
                    f"{where}: range {text} has a {checksum_type} checksum of the wrong length"
                )
        ranges.append(BlockRange(first, last, checksum))
    if sum(r.blocks for r in ranges) != mapped_count:
        raise BmapError(
            f"{where}: <MappedBlocksCount> says {mapped_count} blocks but the ranges hold "
            f"{sum(r.blocks for r in ranges)}"
        )
    return Bmap(
        version=version,
        image_size=image_size,
        block_size=block_size,
        blocks_count=blocks_count,
        mapped_blocks_count=mapped_count,
        checksum_type=checksum_type,
        ranges=tuple(ranges),
    )


def read_bmap(path: Path) -> Bmap:
    """Read and validate a bmap file written by k3py or by bmaptool."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BmapError(f"cannot read bmap {path}: {err.strerror}") from None
    return parse_bmap(data, str(path))
