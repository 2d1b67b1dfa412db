"""Small builders for synthetic kernels: config text, gzip files and unpacked kernel trees."""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path

from k3py.cluster.checkconfig.fragment import required_fragment
from k3py.cluster.checkconfig.requirements import load_requirements


def config_text(
    values: Mapping[str, str], *, version: str | None = "6.12.38", arch: str = "arm64"
) -> str:
    """A config in Kconfig's own format; a value of "n" is written as ``# CONFIG_X is not set``."""
    lines = ["#", "# Automatically generated file; DO NOT EDIT."]
    if version is not None:
        lines.append(f"# Linux/{arch} {version} Kernel Configuration")
    lines.append("#")
    for symbol, value in values.items():
        lines.append(
            f"# CONFIG_{symbol} is not set" if value == "n" else f"CONFIG_{symbol}={value}"
        )
    return "\n".join(lines) + "\n"


def required_values() -> dict[str, str]:
    """Every required option of the shipped requirements set to ``y``."""
    values: dict[str, str] = {}
    for line in required_fragment(load_requirements()).splitlines():
        if line.startswith("CONFIG_"):
            symbol, _, value = line.removeprefix("CONFIG_").partition("=")
            values[symbol] = value
    return values


def write_config(
    path: Path,
    values: Mapping[str, str],
    *,
    gz: bool = False,
    version: str | None = "6.12.38",
    arch: str = "arm64",
) -> Path:
    data = config_text(values, version=version, arch=arch).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def kernel_tree(
    root: Path,
    values: Mapping[str, str],
    *,
    release: str = "6.12.38-test",
    module_files: tuple[str, ...] = (),
    builtin: tuple[str, ...] = (),
    order: tuple[str, ...] = (),
    usr_merged: bool = True,
) -> Path:
    """An unpacked kernel: boot/config-<release> and (usr/)lib/modules/<release>.

    ``module_files`` are paths under the modules directory, created empty; ``builtin`` and
    ``order`` fill modules.builtin and modules.order.
    """
    (root / "boot").mkdir(parents=True, exist_ok=True)
    write_config(root / "boot" / f"config-{release}", values)
    moddir = root / ("usr/lib/modules" if usr_merged else "lib/modules") / release
    moddir.mkdir(parents=True, exist_ok=True)
    for relative in module_files:
        (moddir / relative).parent.mkdir(parents=True, exist_ok=True)
        (moddir / relative).write_bytes(b"")
    (moddir / "modules.builtin").write_text("".join(f"{b}\n" for b in builtin))
    (moddir / "modules.order").write_text("".join(f"{o}\n" for o in order))
    return root
