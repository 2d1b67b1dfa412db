"""The block-hash index of a system bundle, and the delta a board downloads from it.

A system bundle carries a whole root slot; beside it, the SHA-256 of every fixed-size block of
the slot (the index). A board hashes the slots it already has, and takes every block whose hash
it finds there from its own disk; only the others are downloaded (with HTTP Range, from the
bundle's payload offset). This is RAUC's "block-hash-index" adaptive update. The lookup is by
content, not position, so a block that moved inside the file system is still reused. Every block
written is checked against the index, whether it came from the disk or the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from k3py.errors import K3pyError

BLOCK_SIZE = 64 * 1024
DIGEST_SIZE = 32


class BlockError(K3pyError):
    """A block index is malformed, or a block does not match it."""


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def blocks_of(file: Readable, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """The file's blocks in order; the last one is padded with zeros to ``block_size``."""
    while block := file.read(block_size):
        yield block.ljust(block_size, b"\0")


def build_index(path: Path, block_size: int = BLOCK_SIZE) -> bytes:
    """The concatenated SHA-256 digests of every block of ``path``."""
    with path.open("rb") as file:
        return b"".join(hashlib.sha256(b).digest() for b in blocks_of(file, block_size))


def digests(index: bytes) -> list[bytes]:
    if len(index) % DIGEST_SIZE:
        raise BlockError(f"block index of {len(index)} bytes is not a whole number of digests")
    return [index[i : i + DIGEST_SIZE] for i in range(0, len(index), DIGEST_SIZE)]


@dataclass(frozen=True)
class LocalBlock:
    path: Path
    offset: int


def local_blocks(sources: Iterable[Path], block_size: int = BLOCK_SIZE) -> dict[bytes, LocalBlock]:
    """Where each block hash is found in the board's own slots (first occurrence wins)."""
    found: dict[bytes, LocalBlock] = {}
    for source in sources:
        with source.open("rb") as file:
            for number, block in enumerate(blocks_of(file, block_size)):
                digest = hashlib.sha256(block).digest()
                found.setdefault(digest, LocalBlock(source, number * block_size))
    return found


@dataclass(frozen=True)
class Delta:
    """Which blocks of the new slot come from the disk and which from the network."""

    total: int
    missing: tuple[int, ...]  # block numbers to download
    block_size: int

    @property
    def download_bytes(self) -> int:
        return len(self.missing) * self.block_size

    @property
    def ratio(self) -> float:
        return len(self.missing) / self.total if self.total else 0.0


def plan(index: bytes, local: dict[bytes, LocalBlock], block_size: int = BLOCK_SIZE) -> Delta:
    wanted = digests(index)
    missing = tuple(n for n, d in enumerate(wanted) if d not in local)
    return Delta(len(wanted), missing, block_size)


def assemble(
    target: BinaryIO,
    index: bytes,
    local: dict[bytes, LocalBlock],
    fetch: Callable[[int, int], bytes],
    size: int,
    block_size: int = BLOCK_SIZE,
) -> Delta:
    """Write the new slot into ``target``: local blocks copied, missing ones fetched.

    ``fetch(offset, length)`` returns bytes of the slot payload (a Range request). Every block is
    checked against the index before it is written; ``size`` trims the last block.
    """
    delta = plan(index, local, block_size)
    handles: dict[Path, BinaryIO] = {}
    try:
        for number, digest in enumerate(digests(index)):
            offset = number * block_size
            length = min(block_size, size - offset)
            source = local.get(digest)
            if source is not None:
                handle = handles.get(source.path)
                if handle is None:
                    handle = handles[source.path] = source.path.open("rb")
                handle.seek(source.offset)
                block = handle.read(block_size).ljust(block_size, b"\0")
            else:
                block = fetch(offset, length).ljust(block_size, b"\0")
            if hashlib.sha256(block).digest() != digest:
                where = "the network" if source is None else str(source.path)
                raise BlockError(f"block {number} from {where} does not match the index")
            target.seek(offset)
            target.write(block[:length])
        target.truncate(size)
    finally:
        for handle in handles.values():
            handle.close()
    return delta
