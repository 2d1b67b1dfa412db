"""Per-card settings: finding the boot partition and composing the card's k3py.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k3py.image.flash.errors import FlashError
from k3py.image.flash.personalise import (
    CardSettings,
    MemoryBootFiles,
    boot_partition,
    confirm_card_config,
    load_card_settings,
    read_mbr,
    render_config,
    write_card_config,
)


def mbr(*entries: tuple[int, int, int]) -> bytes:
    """A 512-byte MBR with (type, first sector, sector count) entries."""
    sector = bytearray(512)
    for index, (type_id, start, count) in enumerate(entries):
        entry = 446 + 16 * index
        sector[entry + 4] = type_id
        sector[entry + 8 : entry + 12] = start.to_bytes(4, "little")
        sector[entry + 12 : entry + 16] = count.to_bytes(4, "little")
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def test_first_fat_partition_is_the_boot_partition() -> None:
    sector = mbr((0x83, 2048, 1000), (0x0C, 4096, 8192), (0x0C, 20000, 100))

    partition = boot_partition(sector, "x.img")

    assert (partition.number, partition.start, partition.size) == (2, 4096 * 512, 8192 * 512)
    assert [p.number for p in read_mbr(sector, "x.img")] == [1, 2, 3]


@pytest.mark.parametrize(
    ("sector", "message"),
    [
        (bytes(512), "no MBR partition table"),
        (mbr((0xEE, 1, 100000)), "GPT"),
        (mbr((0x83, 2048, 1000)), "no FAT boot partition"),
    ],
)
def test_images_without_a_usable_boot_partition_are_refused(sector: bytes, message: str) -> None:
    with pytest.raises(FlashError, match=message):
        boot_partition(sector, "x.img")


@pytest.mark.parametrize("name", ["Node2", "node_2", "-node", "a" * 64, "node..x", ""])
def test_invalid_hostnames_are_refused(name: str) -> None:
    with pytest.raises(FlashError, match="is not valid"):
        load_card_settings(None, name)


def test_valid_hostname_and_nothing_to_do() -> None:
    assert load_card_settings(None, "node-2.shelf") == CardSettings(hostname="node-2.shelf")
    assert load_card_settings(None, None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role: agent\n  bad: indent\n", "line 2"),
        ("- a list\n- not a mapping\n", "expected a mapping"),
        ("role: [unclosed\n", "line"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)

    with pytest.raises(FlashError, match=message) as failure:
        load_card_settings(path, None)

    assert "\n" not in str(failure.value)
    assert str(path) in str(failure.value)


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match="cannot read config"):
        load_card_settings(tmp_path / "absent.yaml", None)


NODE = "# shelf 2\nrole: agent\nserver: https://192.0.2.10:6443\n"


def test_config_is_written_verbatim() -> None:
    assert render_config(CardSettings(NODE, "node.yaml"), "role: server\n") == NODE


def test_hostname_is_added_keeping_comments() -> None:
    text = render_config(CardSettings(NODE, "node.yaml", "node7"), None)

    assert text == NODE + "hostname: node7\n"


def test_hostname_replaces_the_existing_one() -> None:
    config = "hostname: old\nrole: agent\nnode-label:\n  hostname: not-this-one\n"

    text = render_config(CardSettings(config, "node.yaml", "node7"), None)

    assert text == "hostname: node7\nrole: agent\nnode-label:\n  hostname: not-this-one\n"


def test_numeric_hostname_stays_a_string() -> None:
    text = render_config(CardSettings(None, "", "1234"), None)

    assert yaml.safe_load(text) == {"hostname": "1234"}


def test_flow_style_config_is_re_emitted_with_the_hostname() -> None:
    text = render_config(CardSettings("{role: agent, hostname: a}", "node.yaml", "b"), None)

    assert yaml.safe_load(text) == {"role": "agent", "hostname": "b"}


def test_hostname_alone_keeps_the_config_baked_into_the_image() -> None:
    boot = MemoryBootFiles({"k3py.yaml": b"role: server\n", "config.txt": b"arm_64bit=1\n"})

    written = write_card_config(boot, CardSettings(hostname="srv1"))

    assert written == "role: server\nhostname: srv1\n"
    assert boot.files["k3py.yaml"] == written.encode()
    assert boot.files["config.txt"] == b"arm_64bit=1\n"
    confirm_card_config(boot, written)


def test_read_back_mismatch_is_reported() -> None:
    boot = MemoryBootFiles({"k3py.yaml": b"role: agent\n"})

    with pytest.raises(FlashError, match="differs from what was written"):
        confirm_card_config(boot, "role: server\n")
