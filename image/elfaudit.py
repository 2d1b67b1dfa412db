# mypy: allow-untyped-calls
"""The ELF audit: every binary in the image runs on the board and finds its libraries.

For each ELF file (read with pyelftools): class (32/64-bit), machine, endianness and, on ARMv7,
the hard-float ABI flag must match the board; the program interpreter must exist in the image;
and every ``DT_NEEDED`` library must resolve through the same search the dynamic loader makes
(``DT_RPATH``/``DT_RUNPATH`` with ``$ORIGIN``, the multiarch directories, ``ld.so.conf.d``).
Offenders are reported with the package they came from.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

EF_ARM_ABI_FLOAT_HARD = 0x400
EF_ARM_EABIMASK = 0xFF000000


@dataclass(frozen=True)
class Offender:
    path: str
    package: str
    problem: str

    def __str__(self) -> str:
        return f"/{self.path} (package {self.package}): {self.problem}"


@dataclass
class AuditReport:
    files_checked: int = 0
    offenders: list[Offender] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.offenders

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "files_checked": self.files_checked,
            "offenders": [str(o) for o in self.offenders],
        }


def _inside(root: Path, path: str, hops: int = 40) -> Path | None:
    """Resolve an absolute in-image path, following symlinks inside the image, never outside."""
    current = path.lstrip("/")
    for _ in range(hops):
        parts = current.split("/")
        resolved = ""
        for index, part in enumerate(parts):
            candidate = posixpath.join(resolved, part) if resolved else part
            full = root / candidate
            if full.is_symlink():
                target = os.readlink(full)
                rest = "/".join(parts[index + 1 :])
                base = "" if target.startswith("/") else posixpath.dirname(candidate)
                current = posixpath.normpath(posixpath.join(base, target.lstrip("/"), rest))
                current = current.lstrip("/")
                break
            resolved = candidate
        else:
            full = root / resolved
            return full if full.exists() else None
    return None


def _ld_so_conf_dirs(root: Path) -> list[str]:
    dirs: list[str] = []
    conf_d = root / "etc/ld.so.conf.d"
    for conf in sorted(conf_d.glob("*.conf")) if conf_d.is_dir() else []:
        for raw in conf.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("/"):
                dirs.append(line)
    return dirs


def audit(
    root: Path,
    owners: Mapping[str, str],
    *,
    elf_class: int,
    machine: str,
    triplet: str,
    hard_float: bool,
    skip: tuple[str, ...] = ("usr/lib/modules/",),
) -> AuditReport:
    """Check every ELF file under ``root``; ``owners`` maps paths to packages."""
    report = AuditReport()
    # glibc's built-in search path: the multiarch directories, then (64-bit) lib64.
    default_dirs = [f"/usr/lib/{triplet}", "/usr/lib", f"/lib/{triplet}", "/lib"]
    if elf_class == 64:
        default_dirs += ["/lib64", "/usr/lib64"]
    search_dirs = _ld_so_conf_dirs(root) + default_dirs
    for directory, _dirnames, filenames in os.walk(root):
        for name in sorted(filenames):
            full = Path(directory, name)
            relative = str(full.relative_to(root))
            if full.is_symlink() or relative.startswith(skip):
                continue
            with full.open("rb") as file:
                if file.read(4) != b"\x7fELF":
                    continue
                file.seek(0)
                package = owners.get(relative, "none: added by the build or --overlay")
                problems = _check(root, relative, file, elf_class, machine, hard_float, search_dirs)
            report.files_checked += 1
            report.offenders.extend(Offender(relative, package, p) for p in problems)
    return report


def _check(
    root: Path,
    relative: str,
    file: object,
    elf_class: int,
    machine: str,
    hard_float: bool,
    search_dirs: list[str],
) -> list[str]:
    try:
        elf = ELFFile(file)
    except ELFError as err:
        return [f"unreadable ELF file ({err})"]
    problems: list[str] = []
    if elf.elfclass != elf_class:
        problems.append(f"{elf.elfclass}-bit ELF, the board runs {elf_class}-bit")
    if elf["e_machine"] != machine:
        problems.append(f"machine {elf['e_machine']}, the board needs {machine}")
    if not elf.little_endian:
        problems.append("big-endian, the board is little-endian")
    if problems:
        return problems  # the rest of the checks only make sense for the right architecture
    if machine == "EM_ARM" and elf["e_type"] in {"ET_EXEC", "ET_DYN"}:
        flags = elf["e_flags"]
        if hard_float and flags & EF_ARM_EABIMASK and not flags & EF_ARM_ABI_FLOAT_HARD:
            problems.append("soft-float ABI, the board is armhf (hard-float)")
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_INTERP":
            interpreter = segment.get_interp_name()
            if _inside(root, interpreter) is None:
                problems.append(f"program interpreter {interpreter} is not in the image")
    dynamic = elf.get_section_by_name(".dynamic")
    if isinstance(dynamic, DynamicSection):
        needed: list[str] = []
        paths: list[str] = []
        origin = "/" + posixpath.dirname(relative)
        for tag in dynamic.iter_tags():
            if tag.entry.d_tag == "DT_NEEDED":
                needed.append(tag.needed)
            elif tag.entry.d_tag in {"DT_RPATH", "DT_RUNPATH"}:
                text = tag.rpath if tag.entry.d_tag == "DT_RPATH" else tag.runpath
                paths += [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                          for p in text.split(":") if p]  # fmt: skip
        for library in needed:
            candidates = [library] if "/" in library else [
                posixpath.join(d, library) for d in paths + search_dirs
            ]  # fmt: skip
            if not any(_inside(root, c) is not None for c in candidates):
                problems.append(f"needs {library}, which no library in the image provides")
    return problems
