"""Which kernel modules a kernel tree really has: ``lib/modules/<release>`` as it is on disk.

A config that says ``=m`` only promises a module; an image build may have pruned it since. A
module counts as present when ``modules.builtin`` lists it (built into the kernel) or when its
file (``.ko``, ``.ko.xz``, ``.ko.zst``, ``.ko.gz``) exists under the tree. ``modules.dep`` and
``modules.order`` only tell which modules the kernel was built with, so that a missing one can be
reported as pruned rather than never built. Names compare with ``-`` and ``_`` as equals, as
modprobe does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
BUILTIN = "built in"


def module_name(path: str) -> str:
    """``kernel/drivers/net/vxlan/vxlan.ko.xz`` → ``vxlan`` (with ``-`` as ``_``)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def find_modules_dir(root: Path, release: str) -> Path | None:
    """``root/lib/modules/<release>`` or ``root/usr/lib/modules/<release>``, whichever exists."""
    for base in ("lib/modules", "usr/lib/modules"):
        candidate = root / base / release
        if candidate.is_dir():
            return candidate
    return None


def _listed(path: Path) -> frozenset[str]:
    """Module names from modules.builtin, modules.order or modules.dep (one module per line)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    return frozenset(
        module_name(line.split(":", 1)[0].strip()) for line in text.splitlines() if line.strip()
    )


@dataclass(frozen=True)
class ModuleIndex:
    """The modules of one kernel tree: built in, present as files, and built at all."""

    directory: Path
    builtin: frozenset[str]
    files: Mapping[str, str]  # module name -> path relative to ``directory``
    built: frozenset[str]  # every module the kernel was built with (modules.order/.dep)

    @classmethod
    def scan(cls, directory: Path) -> ModuleIndex:
        files: dict[str, str] = {}
        for parent, _dirs, names in os.walk(directory):
            for name in names:
                if name.endswith(_SUFFIXES):
                    relative = os.path.relpath(os.path.join(parent, name), directory)
                    files.setdefault(module_name(name), relative)
        built = _listed(directory / "modules.order") | _listed(directory / "modules.dep")
        return cls(directory, _listed(directory / "modules.builtin"), files, built)

    def find(self, name: str) -> str | None:
        """Where the module is (``built in`` or its relative path), or None if absent."""
        key = name.replace("-", "_")
        if key in self.builtin:
            return BUILTIN
        return self.files.get(key)

    def was_built(self, name: str) -> bool:
        return name.replace("-", "_") in self.built
