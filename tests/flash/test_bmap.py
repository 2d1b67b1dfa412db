"""Block maps: which blocks of a sparse file are mapped, and bmaptool's file format."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from k3py.image.bmap import BmapError, create_bmap, parse_bmap, read_bmap, render_bmap

BLOCK = 4096


def sparse_file(path: Path, size: int, pieces: dict[int, bytes]) -> None:
    with path.open("wb") as file:
        file.truncate(size)
        for offset, data in pieces.items():
            file.seek(offset)
            file.write(data)


def block_digest(path: Path, first: int, last: int) -> str:
    data = path.read_bytes()[first * BLOCK : (last + 1) * BLOCK]
    return hashlib.sha256(data).hexdigest()


def test_create_bmap_maps_exactly_the_blocks_holding_data(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    sparse_file(
        image,
        4 << 20,
        {0: b"\x55" * 512, 5 * BLOCK + 100: b"ten bytes!", (1 << 20) - 10: os.urandom(BLOCK)},
    )

    bmap = create_bmap(image, tmp_path / "disk.bmap")

    assert [(r.first, r.last) for r in bmap.ranges] == [(0, 0), (5, 5), (255, 256)]
    assert bmap.image_size == 4 << 20
    assert bmap.blocks_count == 1024
    assert bmap.mapped_blocks_count == 4
    assert bmap.checksum_type == "sha256"
    for block_range in bmap.ranges:
        assert block_range.checksum == block_digest(image, block_range.first, block_range.last)
    assert read_bmap(tmp_path / "disk.bmap") == bmap


def test_last_partial_block_is_checksummed_up_to_the_image_end(tmp_path: Path) -> None:
    image = tmp_path / "odd.img"
    size = 3 * BLOCK + 1000
    sparse_file(image, size, {3 * BLOCK: os.urandom(1000)})

    bmap = create_bmap(image, tmp_path / "odd.bmap")

    assert bmap.blocks_count == 4
    assert [(r.first, r.last) for r in bmap.ranges] == [(3, 3)]
    assert bmap.ranges[0].checksum == hashlib.sha256(image.read_bytes()[3 * BLOCK :]).hexdigest()
    assert bmap.byte_span(bmap.ranges[0]) == (3 * BLOCK, size)
    assert bmap.mapped_size == 1000


def test_preallocated_zeroed_extents_are_mapped(tmp_path: Path) -> None:
    """Ranges an image tool zeroed with fallocate must reach the card, as bmaptool's do."""
    image = tmp_path / "zeroed.img"
    sparse_file(image, 1 << 20, {0: b"mbr"})
    fd = os.open(image, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 16 * BLOCK, 8 * BLOCK)
    finally:
        os.close(fd)

    bmap = create_bmap(image, tmp_path / "zeroed.bmap")

    assert [(r.first, r.last) for r in bmap.ranges] == [(0, 0), (16, 23)]
    assert bmap.ranges[1].checksum == hashlib.sha256(bytes(8 * BLOCK)).hexdigest()


def test_empty_image_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "empty.img"
    image.touch()

    with pytest.raises(BmapError, match="empty"):
        create_bmap(image, tmp_path / "empty.bmap")


def test_file_checksum_follows_bmaptools_rule(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    sparse_file(image, 1 << 20, {BLOCK: b"data"})
    create_bmap(image, tmp_path / "disk.bmap")
    text = (tmp_path / "disk.bmap").read_text()

    stored = re.search(r"<BmapFileChecksum> ([0-9a-f]{64}) </BmapFileChecksum>", text)

    assert stored is not None
    zeroed = text.replace(stored.group(1), "0" * 64)
    assert hashlib.sha256(zeroed.encode()).hexdigest() == stored.group(1)
    assert text.startswith('<?xml version="1.0" ?>')
    assert '<bmap version="2.0">' in text
    assert "<BlockSize> 4096 </BlockSize>" in text
    assert "<ChecksumType> sha256 </ChecksumType>" in text
    assert re.search(r'<Range chksum="[0-9a-f]{64}"> 1 </Range>', text)


def test_edited_bmap_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    sparse_file(image, 1 << 20, {BLOCK: b"data", 9 * BLOCK: b"more"})
    create_bmap(image, tmp_path / "disk.bmap")
    text = (tmp_path / "disk.bmap").read_text().replace("> 9 </Range>", "> 8-9 </Range>")

    with pytest.raises(BmapError, match="damaged or was edited"):
        parse_bmap(text.encode(), "disk.bmap")


def _legacy_bmap(version: str, file_tag: str | None, ranges: str, hash_name: str) -> bytes:
    """A bmap as older bmaptool versions wrote it, with its file checksum filled in."""
    length = len(hashlib.new(hash_name).hexdigest())
    checksum_line = f"<{file_tag}> {'0' * length} </{file_tag}>" if file_tag else ""
    text = (
        f'<?xml version="1.0" ?>\n<bmap version="{version}">\n'
        "<ImageSize> 40960 </ImageSize>\n<BlockSize> 4096 </BlockSize>\n"
        "<BlocksCount> 10 </BlocksCount>\n<MappedBlocksCount> 3 </MappedBlocksCount>\n"
        f"{checksum_line}\n<BlockMap>\n{ranges}</BlockMap>\n</bmap>\n"
    )
    if file_tag:
        digest = hashlib.new(hash_name, text.encode()).hexdigest()
        text = text.replace("0" * length, digest, 1)
    return text.encode()


def test_reads_format_1_3_with_sha1() -> None:
    sha1 = hashlib.sha1(b"x").hexdigest()
    data = _legacy_bmap(
        "1.3",
        "BmapFileSHA1",
        f'<Range sha1="{sha1}"> 0-1 </Range>\n<Range sha1="{sha1}"> 7 </Range>\n',
        "sha1",
    )

    bmap = parse_bmap(data, "old.bmap")

    assert bmap.checksum_type == "sha1"
    assert [(r.first, r.last, r.checksum) for r in bmap.ranges] == [(0, 1, sha1), (7, 7, sha1)]


def test_reads_format_1_2_without_checksums() -> None:
    data = _legacy_bmap("1.2", None, "<Range> 0-1 </Range>\n<Range> 7 </Range>\n", "sha1")

    bmap = parse_bmap(data, "older.bmap")

    assert bmap.checksum_type is None
    assert [r.checksum for r in bmap.ranges] == [None, None]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('version="2.0"', 'version="3.0"'), "newer than"),
        (lambda t: t.replace("<BlocksCount> 256 ", "<BlocksCount> 255 "), "inconsistent"),
        (lambda t: t.replace("<MappedBlocksCount> 2 ", "<MappedBlocksCount> 3 "), "says 3"),
        (lambda t: t.replace("> 9 </Range>", "> 1 </Range>"), "overlaps"),
        (lambda t: t.replace("> 9 </Range>", "> 300 </Range>"), "outside"),
        (lambda t: t.replace("</bmap>", ""), "XML error"),
    ],
)
def test_malformed_bmaps_are_refused(
    tmp_path: Path, edit: Callable[[str], str], message: str
) -> None:
    image = tmp_path / "disk.img"
    sparse_file(image, 1 << 20, {BLOCK: b"data", 9 * BLOCK: b"more"})
    bmap = create_bmap(image, tmp_path / "disk.bmap")
    edited = edit((tmp_path / "disk.bmap").read_text())
    # Re-sign the edited file so that the structural check, not the checksum, must catch it.
    resigned = render_like(edited, bmap.checksum_type or "sha256")

    with pytest.raises(BmapError, match=message):
        parse_bmap(resigned.encode(), "disk.bmap")


def render_like(text: str, hash_name: str) -> str:
    match = re.search(r"<BmapFileChecksum> ([0-9a-f]+) </BmapFileChecksum>", text)
    if match is None:
        return text
    zeroed = text.replace(match.group(1), "0" * len(match.group(1)), 1)
    return zeroed.replace(
        "0" * len(match.group(1)), hashlib.new(hash_name, zeroed.encode()).hexdigest(), 1
    )


def test_render_round_trips(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    sparse_file(image, 1 << 20, {0: b"a", 40 * BLOCK: b"b" * 3 * BLOCK})
    bmap = create_bmap(image, tmp_path / "disk.bmap")

    assert parse_bmap(render_bmap(bmap).encode(), "again") == bmap
