"""Reading configs: Kconfig's line forms, gzip vs plain, and bad input as one readable error."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from k3py.cluster.checkconfig.errors import ConfigNotFoundError, NotAKernelConfigError
from k3py.cluster.checkconfig.kconfig import parse_config, read_config, version_of_release
from tests.checkconfig.helpers import config_text, write_config

VALUES = {"VXLAN": "m", "MEMCG": "y", "IP_VS": "n", "LOCALVERSION": '""', "NR_CPUS": "4"}


def test_line_forms_and_header() -> None:
    config = parse_config(config_text(VALUES, version="5.10.0", arch="arm").encode(), "c")
    assert config.value("VXLAN") == "m"
    assert config.value("MEMCG") == "y"
    assert config.value("IP_VS") is None  # "# CONFIG_IP_VS is not set"
    assert config.value("NOT_MENTIONED") is None
    assert config.value("NR_CPUS") == "4"
    assert config.version == (5, 10)
    assert config.arch == "arm"


def test_arch_without_header_comes_from_the_config() -> None:
    config = parse_config(config_text({"X86": "y", "MEMCG": "y"}, version=None).encode(), "c")
    assert config.version is None
    assert config.arch == "x86"


def test_gzip_and_plain_read_the_same(tmp_path: Path) -> None:
    plain = read_config(write_config(tmp_path / "config", VALUES))
    packed = read_config(write_config(tmp_path / "config.gz", VALUES, gz=True))
    assert plain.values == packed.values
    assert plain.version == packed.version == (6, 12)


def test_release_strings() -> None:
    assert version_of_release("6.12.38+deb13-arm64") == (6, 12)
    assert version_of_release("5.1.0-rc1") == (5, 1)
    assert version_of_release("unknown") is None


def test_missing_file_and_directory_are_exit_66(tmp_path: Path) -> None:
    with pytest.raises(ConfigNotFoundError, match="does not exist") as raised:
        read_config(tmp_path / "nope")
    assert raised.value.exit_code == 66
    with pytest.raises(ConfigNotFoundError, match="--kernel-dir"):
        read_config(tmp_path)


def _damaged(tmp_path: Path) -> dict[str, bytes]:
    packed = gzip.compress(config_text(VALUES).encode() * 50)
    return {
        "passwd": b"root:x:0:0:root:/root:/bin/bash\n",
        "binary": bytes(range(256)) * 4,
        "empty": b"",
        "comments only": b"# nothing here\n",
        "truncated gzip": packed[: len(packed) // 2],
        "corrupt gzip": packed[:10] + b"\x00" * 40 + packed[50:],
    }


@pytest.mark.parametrize(
    "kind", ["passwd", "binary", "empty", "comments only", "truncated gzip", "corrupt gzip"]
)
def test_bad_input_is_exit_65_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "input"
    path.write_bytes(_damaged(tmp_path)[kind])
    with pytest.raises(NotAKernelConfigError) as raised:
        read_config(path)
    assert raised.value.exit_code == 65
    message = str(raised.value)
    assert "\n" not in message
    assert str(path) in message
    if kind == "truncated gzip":
        assert "truncated" in message
