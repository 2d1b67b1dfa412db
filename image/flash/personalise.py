"""Per-card settings: the boot partition's ``k3py.yaml``, written without mounting anything.

One image serves many boards; what differs per card (hostname, role, server URL, token, labels,
SSH keys) goes into ``k3py.yaml`` on the FAT boot partition, which the board reads at first
boot. The partition is found by reading the MBR ourselves; its files are read and written with
mtools at the partition's byte offset on the device (``mcopy -i /dev/sdX@@offset``), so neither
a loop device, a mount, nor a kernel that understands the partition table is needed. The
settings are checked before the card is touched, and the written file is read back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from k3py.image.flash.errors import FlashError

CONFIG_NAME = "k3py.yaml"
SECTOR = 512
# MBR partition types of FAT file systems (FAT12, FAT16 <32M, FAT16, FAT32 CHS/LBA, FAT16
# LBA, EFI system partition).
FAT_TYPES = frozenset({0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E, 0xEF})
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True)
class Partition:
    number: int
    type_id: int
    start: int  # bytes
    size: int  # bytes


def read_mbr(sector: bytes, where: str) -> list[Partition]:
    """The primary partitions of an MBR (the first 512 bytes of a disk)."""
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        raise FlashError(f"{where} has no MBR partition table")
    partitions = []
    for number in range(1, 5):
        entry = sector[446 + 16 * (number - 1) : 446 + 16 * number]
        type_id = entry[4]
        start = int.from_bytes(entry[8:12], "little")
        count = int.from_bytes(entry[12:16], "little")
        if type_id == 0xEE:
            raise FlashError(f"{where} has a GPT partition table; only MBR images can be set up")
        if type_id and count:
            partitions.append(Partition(number, type_id, start * SECTOR, count * SECTOR))
    return partitions


def boot_partition(sector: bytes, where: str) -> Partition:
    """The first FAT partition, where the board looks for ``k3py.yaml``."""
    for partition in read_mbr(sector, where):
        if partition.type_id in FAT_TYPES:
            return partition
    raise FlashError(f"{where} has no FAT boot partition to hold {CONFIG_NAME}")


@dataclass(frozen=True)
class CardSettings:
    """What this card gets: a config file's text (kept verbatim) and/or a hostname."""

    config_text: str | None = None
    config_source: str = ""
    hostname: str | None = None


def _parse(text: str, where: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise FlashError(f"{where}: {problem}{at}; fix the file and retry") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise FlashError(f"{where}: expected a mapping of setting names to values")
    return data


def load_card_settings(config: Path | None, hostname: str | None) -> CardSettings | None:
    """Check ``--config`` and ``--hostname`` up front; ``None`` when there is nothing to write."""
    if hostname is not None and (len(hostname) > 253 or not _HOSTNAME.fullmatch(hostname)):
        raise FlashError(
            f"hostname {hostname!r} is not valid: use lower-case letters, digits and '-' "
            "(dot-separated labels of at most 63 characters, as Kubernetes node names need)"
        )
    text = None
    if config is not None:
        try:
            text = config.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise FlashError(f"cannot read config {config}: {err}") from None
        _parse(text, str(config))
    if text is None and hostname is None:
        return None
    return CardSettings(text, str(config) if config else "", hostname)


def _hostname_line(hostname: str) -> str:
    import yaml

    line: str = yaml.safe_dump({"hostname": hostname}, default_flow_style=False)
    return line


def render_config(card: CardSettings, existing: str | None) -> str:
    """The new ``k3py.yaml``: the given config (else the card's current one) with the hostname.

    The text is kept as written, comments included; only a top-level ``hostname:`` line is
    replaced or added.
    """
    import yaml

    text = card.config_text if card.config_text is not None else (existing or "")
    if card.hostname is None:
        return text
    where = card.config_source or f"the image's {CONFIG_NAME}"
    settings = _parse(text, where)
    line = _hostname_line(card.hostname)
    pattern = re.compile(r"^hostname[ \t]*:.*\n?", re.MULTILINE)
    if "hostname" in settings and len(pattern.findall(text)) == 1:
        result = pattern.sub(lambda _: line, text)
    elif "hostname" not in settings and not text.lstrip().startswith("{"):
        result = text + ("\n" if text and not text.endswith("\n") else "") + line
    else:
        result = ""
    wanted = {**settings, "hostname": card.hostname}
    if not result or _parse(result, where) != wanted:
        # The text's layout defeated a line edit (flow style, a multi-line value): re-emit it.
        result = yaml.safe_dump(wanted, default_flow_style=False, sort_keys=False)
    return result


class BootFiles(Protocol):
    """Files in the root directory of a FAT boot partition."""

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes) -> None: ...


class MtoolsBootFiles:
    """The FAT partition at ``offset`` bytes into ``device`` (a block device or image file)."""

    def __init__(self, device: Path, offset: int) -> None:
        if shutil.which("mcopy") is None:
            raise FlashError("mcopy is not installed; install mtools (apt-get install mtools)")
        self._drive = f"{device}@@{offset}"
        self._env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}

    def _mcopy(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["mcopy", "-i", self._drive, *argv],
            env=self._env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    @staticmethod
    def _why(result: subprocess.CompletedProcess[str]) -> str:
        lines = [ln for ln in result.stderr.splitlines() if "geometry" not in ln]
        return " ".join(" ".join(lines).split()) or f"exit code {result.returncode}"

    def read(self, name: str) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="k3py-flash-") as scratch:
            local = Path(scratch) / name
            result = self._mcopy("-n", f"::/{name}", str(local))
            if result.returncode != 0:
                if "not found" in result.stderr:
                    return None
                raise FlashError(f"cannot read {name} from {self._drive}: {self._why(result)}")
            return local.read_bytes()

    def write(self, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="k3py-flash-") as scratch:
            local = Path(scratch) / name
            local.write_bytes(data)
            result = self._mcopy("-o", str(local), f"::/{name}")
        if result.returncode != 0:
            raise FlashError(
                f"cannot write {name} to the boot partition ({self._drive}): "
                f"{self._why(result)}; the image is written but not personalised"
            )


class MemoryBootFiles:
    """A boot partition held in a dict, for tests of what gets written."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})

    def read(self, name: str) -> bytes | None:
        return self.files.get(name)

    def write(self, name: str, data: bytes) -> None:
        self.files[name] = data


def write_card_config(boot: BootFiles, card: CardSettings) -> str:
    """Write the card's ``k3py.yaml`` into the boot partition; return the text written."""
    current = boot.read(CONFIG_NAME)
    existing = current.decode(errors="replace") if current is not None else None
    text = render_config(card, existing)
    boot.write(CONFIG_NAME, text.encode())
    return text


def confirm_card_config(boot: BootFiles, text: str) -> None:
    """Read ``k3py.yaml`` back (after the caller dropped cached pages) and compare."""
    if boot.read(CONFIG_NAME) != text.encode():
        raise FlashError(
            f"{CONFIG_NAME} read back from the boot partition differs from what was written; "
            "the card is not reliable"
        )
