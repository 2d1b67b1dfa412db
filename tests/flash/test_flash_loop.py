"""``k3py flash`` onto real loop devices, with images made by sfdisk, mkfs.vfat and mke2fs.

Cards start full of stale data (as a used SD card is), so a bmap flash must still leave
file systems that check clean. Needs root for the loop devices.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k3py.image.bmap import Bmap, create_bmap
from k3py.image.flash.errors import FlashError
from k3py.image.flash.flashing import FlashSettings, flash
from tests.flash.conftest import MIB, LoopDevice, Outcome
from tests.flash.diskimage import DiskImage, build_image, ext4_file, fat_file, read_span
from tests.flash.fakes import FakeConsole, Recorder

pytestmark = pytest.mark.image

NODE_YAML = (
    "# settings for one card\n"
    "role: agent\n"
    "server: https://192.0.2.10:6443\n"
    "token: K10abc::server:secret\n"
    "node-label:\n  - zone=shelf-2\n"
)


@dataclass(frozen=True)
class Images:
    image: DiskImage
    bmap: Bmap
    other: DiskImage  # same size, different content
    directory: Path

    def packed(self, suffix: str) -> Path:
        return self.image.path.with_name(self.image.path.name + suffix)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    directory = tmp_path_factory.mktemp("images")
    files = {
        "blob": os.urandom(3 * MIB),
        "hello.txt": b"hello from the root partition\n",
    }
    image = build_image(directory / "board-agent.img", files)
    bmap = create_bmap(image.path, directory / "board-agent.bmap")
    for tool in (["zstd", "-q", "-k"], ["xz", "-k", "-0"], ["gzip", "-k", "-1"]):
        subprocess.run([*tool, str(image.path)], check=True, timeout=120)
    other = build_image(directory / "other.img", {"different.txt": b"another image\n"})
    create_bmap(other.path, directory / "other.bmap")
    return Images(image, bmap, other, directory)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_root_matches(device: Path, image: DiskImage, scratch: Path) -> None:
    """The card's root partition checks clean and holds the image's files."""
    copy = scratch / "root.ext4"
    copy.write_bytes(read_span(device, image.root_offset, image.root_size))
    check = subprocess.run(
        ["e2fsck", "-fn", str(copy)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for name, data in image.files.items():
        assert ext4_file(copy, name) == data


def assert_mapped_ranges_match(device: Path, image: DiskImage, bmap: Bmap) -> None:
    for block_range in bmap.ranges:
        start, end = bmap.byte_span(block_range)
        assert read_span(device, start, end - start) == read_span(image.path, start, end - start)


def one_error(result: Outcome) -> str:
    errors = result.error_lines()
    assert result.code != 0
    assert len(errors) == 1, result.err
    assert "Traceback" not in result.err
    return errors[0]


@pytest.mark.parametrize("suffix", ["", ".zst", ".xz", ".gz"])
def test_flash_writes_verifies_and_personalises(
    suffix: str,
    images: Images,
    loop_device: Callable[..., LoopDevice],
    k3py_flash: Callable[..., Outcome],
    tmp_path: Path,
) -> None:
    card = loop_device(96 * MIB, stale=True)
    node = tmp_path / "node.yaml"
    node.write_text(NODE_YAML)

    result = k3py_flash(
        images.packed(suffix), card.path, "--yes", "--config", node, "--hostname", "node7"
    )

    assert result.code == 0, result.err
    assert "with bmap, verified, k3py.yaml written" in result.out
    assert "k3py flash: writing done" in result.err
    assert "k3py flash: verifying done" in result.err
    image = images.image
    assert (
        fat_file(card.path, image.boot_offset, "k3py.yaml")
        == (NODE_YAML + "hostname: node7\n").encode()
    )
    assert fat_file(card.path, image.boot_offset, "config.txt") == fat_file(
        image.path, image.boot_offset, "config.txt"
    )
    assert_root_matches(card.path, image, tmp_path)
    assert read_span(card.path, 0, 512) == read_span(image.path, 0, 512)


def test_flash_without_bmap_writes_the_whole_image(
    images: Images, loop_device: Callable[..., LoopDevice], k3py_flash: Callable[..., Outcome]
) -> None:
    card = loop_device(80 * MIB, stale=True)

    result = k3py_flash(images.packed(".zst"), card.path, "--yes", "--no-bmap")

    assert result.code == 0, result.err
    assert "(whole image), verified" in result.out
    assert read_span(card.path, 0, images.image.size) == images.image.path.read_bytes()


def test_corrupted_image_byte_fails_naming_the_range(
    images: Images,
    loop_device: Callable[..., LoopDevice],
    k3py_flash: Callable[..., Outcome],
    tmp_path: Path,
) -> None:
    card = loop_device(96 * MIB)
    damaged = tmp_path / "damaged.img"
    shutil.copyfile(images.image.path, damaged)
    superblock = images.image.root_offset + 1024 + 100  # inside the ext4 superblock
    with damaged.open("r+b") as file:
        file.seek(superblock)
        byte = file.read(1)
        file.seek(superblock)
        file.write(bytes([byte[0] ^ 0xFF]))
    bmap = images.bmap
    hit = next(r for r in bmap.ranges if bmap.byte_span(r)[0] <= superblock < bmap.byte_span(r)[1])

    result = k3py_flash(
        damaged, card.path, "--yes", "--bmap", images.directory / "board-agent.bmap"
    )

    error = one_error(result)
    assert f"blocks {hit.first}-{hit.last}" in error
    assert "checksum" in error
    assert "partly written" in error


def _flip_byte_when_verifying(backing: Path, offset: int) -> Callable[[str], None]:
    """Flip a byte of the card behind the writer's back when verifying starts."""

    def on_start(stage: str) -> None:
        if stage == "verifying":
            with backing.open("r+b") as file:
                file.seek(offset)
                byte = file.read(1)
                file.seek(offset)
                file.write(bytes([byte[0] ^ 0x01]))

    return on_start


def test_card_that_does_not_keep_data_fails_verification(
    images: Images, loop_device: Callable[..., LoopDevice]
) -> None:
    card = loop_device(96 * MIB)
    bmap = images.bmap
    target_range = bmap.ranges[-1]
    offset = bmap.byte_span(target_range)[0] + 7
    settings = FlashSettings(image=images.packed(".zst"), target=card.path, assume_yes=True)

    console = FakeConsole(
        recorder=Recorder(on_start=_flip_byte_when_verifying(card.backing, offset))
    )
    with pytest.raises(FlashError) as failure:
        flash(settings, console)

    message = str(failure.value)
    assert message.startswith("verification failed")
    assert f"blocks {target_range.first}-{target_range.last}" in message
    assert "\n" not in message


@pytest.fixture
def mounted_partition(
    images: Images, loop_device: Callable[..., LoopDevice], tmp_path: Path
) -> Iterator[tuple[LoopDevice, Path]]:
    """A card holding the image, with its root partition mounted."""
    card = loop_device(96 * MIB)
    with card.backing.open("r+b") as file:
        file.write(images.image.path.read_bytes())
    subprocess.run(["partx", "--add", str(card.path)], check=True, timeout=30)
    partition = Path(f"{card.path}p2")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    subprocess.run(["mount", str(partition), str(mountpoint)], check=True, timeout=30)
    try:
        yield card, mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False, timeout=30)
        subprocess.run(["partx", "--delete", str(card.path)], check=False, timeout=30)


def test_mounted_device_is_refused(
    images: Images,
    mounted_partition: tuple[LoopDevice, Path],
    k3py_flash: Callable[..., Outcome],
) -> None:
    card, mountpoint = mounted_partition
    before = digest(card.backing)

    refused = k3py_flash(images.packed(".zst"), card.path, "--yes")
    forced = k3py_flash(images.packed(".zst"), card.path, "--yes", "--force")

    error = one_error(refused)
    assert "mounted" in error
    assert str(mountpoint) in error
    # --force lifts k3py's check, but the kernel still refuses an exclusive open.
    assert "in use" in one_error(forced)
    assert digest(card.backing) == before


def test_allow_file_writes_a_file_target(
    images: Images, k3py_flash: Callable[..., Outcome], tmp_path: Path
) -> None:
    target = tmp_path / "card.img"
    node = tmp_path / "node.yaml"
    node.write_text(NODE_YAML)

    refused = k3py_flash(images.packed(".xz"), target, "--yes")
    result = k3py_flash(images.packed(".xz"), target, "--allow-file", "--config", node)

    assert "--allow-file" in one_error(refused)
    assert result.code == 0, result.err
    assert target.stat().st_size == images.image.size
    image = images.image
    assert fat_file(target, image.boot_offset, "k3py.yaml") == NODE_YAML.encode()
    assert read_span(target, image.root_offset, image.root_size) == read_span(
        image.path, image.root_offset, image.root_size
    )


def test_target_smaller_than_image_is_refused(
    images: Images, loop_device: Callable[..., LoopDevice], k3py_flash: Callable[..., Outcome]
) -> None:
    card = loop_device(32 * MIB, stale=True)
    before = digest(card.backing)

    error = one_error(k3py_flash(images.packed(".zst"), card.path, "--yes"))

    assert "too small" in error
    assert digest(card.backing) == before


def test_truncated_zst_is_refused_before_writing(
    images: Images,
    loop_device: Callable[..., LoopDevice],
    k3py_flash: Callable[..., Outcome],
    tmp_path: Path,
) -> None:
    card = loop_device(96 * MIB, stale=True)
    before = digest(card.backing)
    whole = images.packed(".zst").read_bytes()
    truncated = tmp_path / "board-agent.img.zst"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    shutil.copyfile(images.directory / "board-agent.bmap", tmp_path / "board-agent.bmap")

    error = one_error(k3py_flash(truncated, card.path, "--yes"))

    assert "truncated" in error
    assert digest(card.backing) == before


def test_bmap_of_another_image_is_refused(
    images: Images, loop_device: Callable[..., LoopDevice], k3py_flash: Callable[..., Outcome]
) -> None:
    card = loop_device(96 * MIB)

    error = one_error(
        k3py_flash(
            images.packed(".zst"), card.path, "--yes", "--bmap", images.directory / "other.bmap"
        )
    )

    assert "checksum" in error
    assert "bmap belongs to another image" in error
    assert "partly written" in error


def test_bmap_is_identical_to_bmaptool_create(images: Images, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.bmap"
    subprocess.run(
        ["bmaptool", "create", "-o", str(theirs), str(images.image.path)],
        check=True,
        capture_output=True,
        timeout=120,
    )

    assert (images.directory / "board-agent.bmap").read_text() == theirs.read_text()


def test_bmaptool_copy_accepts_our_bmap(
    images: Images, loop_device: Callable[..., LoopDevice], tmp_path: Path
) -> None:
    card = loop_device(96 * MIB, stale=True)
    bmap = images.directory / "board-agent.bmap"

    copy = subprocess.run(
        ["bmaptool", "copy", "--bmap", str(bmap), str(images.packed(".zst")), str(card.path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert copy.returncode == 0, copy.stderr
    assert_mapped_ranges_match(card.path, images.image, images.bmap)
    assert_root_matches(card.path, images.image, tmp_path)


def test_flash_accepts_bmaptool_bmap(
    images: Images,
    loop_device: Callable[..., LoopDevice],
    k3py_flash: Callable[..., Outcome],
    tmp_path: Path,
) -> None:
    card = loop_device(96 * MIB, stale=True)
    theirs = tmp_path / "theirs.bmap"
    subprocess.run(
        ["bmaptool", "create", "-o", str(theirs), str(images.image.path)],
        check=True,
        capture_output=True,
        timeout=120,
    )

    result = k3py_flash(images.packed(".gz"), card.path, "--yes", "--bmap", theirs)

    assert result.code == 0, result.err
    assert "with bmap, verified" in result.out
    assert_mapped_ranges_match(card.path, images.image, images.bmap)
    assert_root_matches(card.path, images.image, tmp_path)


def test_command_line_flash_of_a_built_image(
    images: Images, loop_device: Callable[..., LoopDevice], tmp_path: Path
) -> None:
    """The acceptance command: ``k3py flash out/X.img.zst /dev/loopN --yes --config node.yaml``."""
    card = loop_device(96 * MIB, stale=True)
    node = tmp_path / "node.yaml"
    node.write_text(NODE_YAML)

    result = subprocess.run(
        [
            sys.executable, "-m", "k3py", "flash", str(images.packed(".zst")), str(card.path),
            "--yes", "--config", str(node),
        ],
        capture_output=True,
        text=True,
        timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "bmap board-agent.bmap" in result.stderr
    assert "writing done" in result.stderr
    assert "verifying done" in result.stderr
    image = images.image
    assert fat_file(card.path, image.boot_offset, "k3py.yaml") == NODE_YAML.encode()
    assert_root_matches(card.path, image, tmp_path)
