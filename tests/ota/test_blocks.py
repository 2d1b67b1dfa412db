"""The block-hash index: a board downloads only the blocks its own slots lack."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from k3py.cluster.ota import blocks

SIZE = 64 * 1024


def _slot(seed: int, count: int = 64) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(SIZE) for _ in range(count))


def test_an_unchanged_slot_downloads_nothing(tmp_path: Path) -> None:
    running = tmp_path / "a"
    running.write_bytes(_slot(1))
    delta = blocks.plan(blocks.build_index(running), blocks.local_blocks([running]))
    assert delta.missing == ()
    assert delta.download_bytes == 0


def test_only_changed_and_new_blocks_are_fetched(tmp_path: Path) -> None:
    old, new = bytearray(_slot(1)), bytearray(_slot(1))
    new[5 * SIZE + 10] ^= 0xFF  # one byte in block 5
    new[40 * SIZE : 41 * SIZE] = new[7 * SIZE : 8 * SIZE]  # block 40 copies block 7: reused
    new += b"appended"  # a partial last block
    running, slot = tmp_path / "a", tmp_path / "new"
    running.write_bytes(bytes(old))
    slot.write_bytes(bytes(new))
    index = blocks.build_index(slot)
    local = blocks.local_blocks([running])
    fetched: list[tuple[int, int]] = []

    def fetch(offset: int, length: int) -> bytes:
        fetched.append((offset, length))
        return bytes(new[offset : offset + length])

    target = io.BytesIO()
    delta = blocks.assemble(target, index, local, fetch, len(new))
    assert delta.missing == (5, 64)
    assert fetched == [(5 * SIZE, SIZE), (64 * SIZE, len(b"appended"))]
    assert target.getvalue() == bytes(new)
    assert delta.ratio == pytest.approx(2 / 65)


def test_a_wrong_block_from_the_network_is_refused(tmp_path: Path) -> None:
    slot = tmp_path / "new"
    slot.write_bytes(_slot(2, 4))
    with pytest.raises(blocks.BlockError, match="block 0 from the network"):
        blocks.assemble(io.BytesIO(), blocks.build_index(slot), {}, lambda o, n: b"x" * n, 4 * SIZE)


def test_a_malformed_index_is_refused() -> None:
    with pytest.raises(blocks.BlockError, match="not a whole number of digests"):
        blocks.digests(b"\0" * 33)
