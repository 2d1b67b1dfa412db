"""Reading a kernel's ``.config``: plain or gzip (``/proc/config.gz``), validated line by line.

A kernel config has only three kinds of lines: blank lines, comments (including
``# CONFIG_X is not set``) and ``CONFIG_X=value``. Anything else means the input is not a kernel
config, and a gzip stream that ends early means it was cut off; both end in one error naming the
file and what is wrong, never a traceback. The header written by Kconfig
(``# Linux/arm64 6.12.38 Kernel Configuration``) gives the kernel version and architecture that
version and architecture conditions are judged by.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from k3py.cluster.checkconfig.errors import ConfigNotFoundError, NotAKernelConfigError
from k3py.cluster.checkconfig.requirements import KernelVersion

_GZIP_MAGIC = b"\x1f\x8b"
_SET = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")
_NOT_SET = re.compile(r"# CONFIG_([A-Za-z0-9_]+) is not set")
_HEADER = re.compile(r"# Linux/(\S+) (\d+)\.(\d+)\S* Kernel Configuration")
_RELEASE = re.compile(r"(\d+)\.(\d+)")
# Kconfig's SRCARCH for the header's "Linux/<arch>" and for configs without a header.
_ARCH_ALIASES = {"x86_64": "x86", "i386": "x86", "aarch64": "arm64"}
_ARCH_SYMBOLS = (("ARM64", "arm64"), ("ARM", "arm"), ("X86", "x86"), ("RISCV", "riscv"))


@dataclass(frozen=True)
class KernelConfig:
    """The options of one kernel config, as Kconfig wrote them."""

    source: str
    values: Mapping[str, str]
    version: KernelVersion | None
    arch: str | None

    def value(self, symbol: str) -> str | None:
        """``"y"``, ``"m"``, a string or number, or None when the option is unset or absent."""
        value = self.values.get(symbol)
        return None if value in (None, "n") else value


def version_of_release(release: str) -> KernelVersion | None:
    """``(6, 12)`` for a release such as ``6.12.38+deb13-arm64``."""
    match = _RELEASE.match(release)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _decompress(data: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(data)
    except EOFError:
        raise NotAKernelConfigError(
            f"{source} is a truncated gzip file (it ends early): copy it again"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise NotAKernelConfigError(f"{source} is a damaged gzip file ({err})") from None


def parse_config(data: bytes, source: str) -> KernelConfig:
    """Parse a kernel config (gzip is recognised by its magic bytes)."""
    if data.startswith(_GZIP_MAGIC):
        data = _decompress(data, source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAKernelConfigError(
            f"{source} is not a kernel config (it is not text); "
            "give a kernel .config or config.gz, such as /boot/config-<release>"
        ) from None
    values: dict[str, str] = {}
    version: KernelVersion | None = None
    arch: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if match := _NOT_SET.fullmatch(line):
                values[match.group(1)] = "n"
            elif version is None and (match := _HEADER.fullmatch(line)):
                arch = _ARCH_ALIASES.get(match.group(1), match.group(1))
                version = (int(match.group(2)), int(match.group(3)))
            continue
        if match := _SET.fullmatch(line):
            values[match.group(1)] = match.group(2)
            continue
        shown = line if len(line) <= 40 else line[:37] + "..."
        raise NotAKernelConfigError(
            f"{source} is not a kernel config (line {number}: {shown!r}); "
            "give a kernel .config or config.gz, such as /boot/config-<release>"
        )
    if not values:
        raise NotAKernelConfigError(f"{source} is not a kernel config (it has no CONFIG_ lines)")
    if arch is None:
        arch = next((name for symbol, name in _ARCH_SYMBOLS if values.get(symbol) == "y"), None)
    return KernelConfig(source, values, version, arch)


def read_config(path: Path) -> KernelConfig:
    """Read and parse the kernel config at ``path``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigNotFoundError(
            f"{path} does not exist: give the path of a kernel config"
        ) from None
    except IsADirectoryError:
        raise ConfigNotFoundError(
            f"{path} is a directory: give a kernel config file, or use --kernel-dir {path}"
        ) from None
    except OSError as err:
        raise ConfigNotFoundError(f"cannot read {path}: {err.strerror}") from None
    return parse_config(data, str(path))
