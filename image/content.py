"""What every appliance image holds, whatever the board: the loader of ``content.toml``.

Packages per role, packages left out, prune globs, the kernel modules the cluster needs (and the
ones the kernel gate insists on), busybox applets and dpkg alternatives. Errors name the file and
the key, like the board loader's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from k3py.image.errors import BoardError

CONTENT_FILE = Path(str(resources.files("k3py.image").joinpath("content.toml")))
ROLES = ("server", "agent")


@dataclass(frozen=True)
class Content:
    common: tuple[str, ...]
    by_role: dict[str, tuple[str, ...]]
    exclude: tuple[str, ...]
    initramfs_packages: tuple[str, ...]
    prune: tuple[str, ...]
    kernel_modules: tuple[str, ...]
    boot_modules: tuple[str, ...]
    required_modules: tuple[str, ...]
    applets: tuple[str, ...]
    alternatives: dict[str, str]

    def packages_for(self, role: str) -> list[str]:
        return [*self.common, *self.by_role[role]]


def _strings(file: Path, data: dict[str, Any], table: str, key: str) -> tuple[str, ...]:
    value = data.get(table, {}).get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BoardError(f"{file}: key '{table}.{key}': expected a list of strings")
    return tuple(value)


def load_content(file: Path = CONTENT_FILE) -> Content:
    try:
        data = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise BoardError(f"{file}: cannot read: {err}") from None
    alternatives = data.get("rootfs", {}).get("alternatives", {})
    if not isinstance(alternatives, dict):
        raise BoardError(f"{file}: key 'rootfs.alternatives': expected a table")
    return Content(
        common=_strings(file, data, "packages", "common"),
        by_role={role: _strings(file, data, "packages", role) for role in ROLES},
        exclude=_strings(file, data, "packages", "exclude"),
        initramfs_packages=_strings(file, data, "packages", "initramfs"),
        prune=_strings(file, data, "prune", "paths"),
        kernel_modules=_strings(file, data, "kernel", "modules"),
        boot_modules=_strings(file, data, "kernel", "boot_modules"),
        required_modules=_strings(file, data, "kernel", "required_modules"),
        applets=_strings(file, data, "rootfs", "applets"),
        alternatives={str(k): str(v) for k, v in alternatives.items()},
    )
