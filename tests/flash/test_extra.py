"""``k3py flash`` on a host without the ``[image]`` extra: raw images flash, a ``.zst`` image
is refused in one line naming the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import zstandard

from k3py.errors import MissingExtra
from k3py.image.flash.source import ImageStream, inspect_image


def test_a_zst_image_without_zstandard_names_the_image_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "board.img.zst"
    image.write_bytes(zstandard.ZstdCompressor().compress(b"\0" * 4096))
    info = inspect_image(image)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if the extra were not installed
    with pytest.raises(MissingExtra) as refused:
        ImageStream(info)
    assert str(refused.value) == (
        "reading .zst images needs k3py's [image] extra (no module 'zstandard'): "
        "pip install 'k3py[image]'"
    )
    assert "\n" not in str(refused.value)


def test_a_raw_image_needs_no_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "board.img"
    image.write_bytes(b"\1" * 4096)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    stream = ImageStream(inspect_image(image))
    try:
        buffer = bytearray(4096)
        assert stream.readinto(memoryview(buffer)) == 4096
    finally:
        stream.close()
