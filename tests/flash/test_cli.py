"""``k3py flash`` at the command line: flags, one-line errors, and the terminal dialogue."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from tests.flash.conftest import Outcome

MIB = 1 << 20


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    path = tmp_path / "board.img"
    with path.open("wb") as file:
        file.truncate(4 * MIB)
        file.seek(MIB)
        file.write(os.urandom(64 * 1024))
    return path


def test_contradicting_bmap_flags_are_a_usage_error(
    small_image: Path, k3py_flash: Callable[..., Outcome], tmp_path: Path
) -> None:
    result = k3py_flash(small_image, tmp_path / "t.img", "--no-bmap", "--bmap", "x.bmap")

    assert result.code == 64
    assert result.error_lines() == [
        "k3py: error: --bmap and --no-bmap contradict each other; pass one of them"
    ]


def test_missing_image_is_one_line(k3py_flash: Callable[..., Outcome], tmp_path: Path) -> None:
    result = k3py_flash(tmp_path / "absent.img.zst", tmp_path / "t.img", "--allow-file")

    assert result.code == 1
    assert result.error_lines() == [
        f"k3py: error: cannot read image {tmp_path / 'absent.img.zst'}: No such file or directory"
    ]


def _spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "k3py", "flash", *args],
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "TERM": "xterm"},
    )


def test_terminal_asks_before_overwriting_and_redraws_progress(
    small_image: Path, tmp_path: Path
) -> None:
    target = tmp_path / "card.img"
    target.write_bytes(b"old contents")

    child = _spawn(str(small_image), str(target), "--allow-file", "--no-bmap")
    child.expect(f"overwrite {target}: regular file\\? Everything on it will be lost. ")
    child.expect("Type 'yes' to continue: ")
    child.sendline("yes")
    child.expect("\r\x1b\\[Kwriting ")
    child.expect("\r\x1b\\[Kwriting done: 4.0 MiB in ")
    child.expect("\r\x1b\\[Kverifying done: 4.0 MiB in ")
    child.expect(f"{target}: flashed {small_image}: 4.0 MiB written \\(whole image\\), verified")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
    assert target.read_bytes() == small_image.read_bytes()


def test_terminal_answer_no_leaves_the_target_alone(small_image: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    target.write_bytes(b"old contents")

    child = _spawn(str(small_image), str(target), "--allow-file")
    child.expect("Type 'yes' to continue: ")
    child.sendline("no")
    child.expect(f"k3py: error: not overwriting {target}: not confirmed")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 1
    assert target.read_bytes() == b"old contents"
