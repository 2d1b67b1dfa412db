"""The kernel requirements as data: the one loader and validator of ``kernel-config/*.toml``.

``kernel-config/requirements.toml`` names groups of Kconfig options (required or optional), each
option with a reason, the module(s) that carry it when built as ``=m``, kernel-version and
architecture conditions, and ``any_of`` alternatives. This module turns it into frozen
dataclasses and refuses anything it does not understand with an error naming the file and the key,
so a typo in the data never silently weakens the check.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from k3py.cluster.checkconfig.errors import RequirementsError

KernelVersion = tuple[int, int]

REQUIREMENTS_FILE = "requirements.toml"

_SYMBOL = re.compile(r"[A-Z0-9_]+")
_GROUP = re.compile(r"[a-z][a-z0-9-]*")
_MODULE = re.compile(r"[A-Za-z0-9_-]+")
_VERSION = re.compile(r"(\d+)\.(\d+)")
_ARCH = re.compile(r"[a-z0-9]+")
_ARCHES = frozenset({"x86", "arm", "arm64", "riscv", "powerpc", "s390", "mips", "loongarch"})


@dataclass(frozen=True)
class Choice:
    """One Kconfig symbol (without ``CONFIG_``) and the modules that carry it as ``=m``."""

    config: str
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """One option, or several alternatives of which one is enough."""

    choices: tuple[Choice, ...]
    reason: str
    since: KernelVersion | None = None
    until: KernelVersion | None = None
    arch: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return " | ".join(f"CONFIG_{c.config}" for c in self.choices)

    def applies(self, version: KernelVersion | None, arch: str | None) -> bool | None:
        """Whether the option exists on this kernel; None when the version is unknown."""
        if self.arch and arch is not None and arch not in self.arch:
            return False
        if self.since is None and self.until is None:
            return True
        if version is None:
            return None
        if self.since is not None and version < self.since:
            return False
        return not (self.until is not None and version > self.until)

    def describe_versions(self) -> str:
        parts = []
        if self.since:
            parts.append(f"from {self.since[0]}.{self.since[1]}")
        if self.until:
            parts.append(f"up to {self.until[0]}.{self.until[1]}")
        return " ".join(parts)


@dataclass(frozen=True)
class Group:
    name: str
    required: bool
    summary: str
    requirements: tuple[Requirement, ...]


@dataclass(frozen=True)
class Requirements:
    source: str
    groups: tuple[Group, ...]

    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)


class _Reader:
    """Typed access to parsed TOML that names the file and key path in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> RequirementsError:
        return RequirementsError(f"{self.source}: {where}: {problem}")

    def table(self, value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a table, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"{where}.{key}", f"unknown key (known: {', '.join(sorted(allowed))})"
                )
        return value

    def text(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "expected a non-empty string")
        if "\n" in value:
            raise self.fail(f"{where}.{key}", "must be one line")
        return value

    def flag(self, table: Mapping[str, Any], key: str, where: str) -> bool:
        value = table.get(key)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", "expected true or false")
        return value

    def names(
        self, table: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str]
    ) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}.{key}", "expected a list of strings")
        for item in value:
            if not pattern.fullmatch(item):
                raise self.fail(f"{where}.{key}", f"{item!r} is not a valid name")
        return tuple(value)

    def version(self, table: Mapping[str, Any], key: str, where: str) -> KernelVersion | None:
        if key not in table:
            return None
        value = table[key]
        match = _VERSION.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise self.fail(f"{where}.{key}", 'expected a kernel version "major.minor", e.g. "5.1"')
        return int(match.group(1)), int(match.group(2))

    def choice(self, value: Any, where: str) -> Choice:
        table = self.table(value, where, {"config", "modules"})
        config = self.text(table, "config", where)
        if config.startswith("CONFIG_") or not _SYMBOL.fullmatch(config):
            raise self.fail(
                f"{where}.config", f"{config!r}: write the symbol without CONFIG_, in capitals"
            )
        return Choice(config, self.names(table, "modules", where, _MODULE))


def _requirement(reader: _Reader, value: Any, where: str) -> Requirement:
    table = reader.table(
        value, where, {"config", "modules", "any_of", "reason", "since", "until", "arch"}
    )
    if ("config" in table) == ("any_of" in table):
        raise reader.fail(where, "give exactly one of 'config' or 'any_of'")
    if "any_of" in table:
        alternatives = table["any_of"]
        if not isinstance(alternatives, list) or len(alternatives) < 2:
            raise reader.fail(f"{where}.any_of", "expected a list of at least two alternatives")
        if "modules" in table:
            raise reader.fail(f"{where}.modules", "give modules inside each any_of alternative")
        choices = tuple(
            reader.choice(a, f"{where}.any_of[{i}]") for i, a in enumerate(alternatives)
        )
    else:
        choices = (
            reader.choice({k: table[k] for k in ("config", "modules") if k in table}, where),
        )
    since = reader.version(table, "since", where)
    until = reader.version(table, "until", where)
    if since and until and since > until:
        raise reader.fail(where, "'since' is later than 'until'")
    arch = reader.names(table, "arch", where, _ARCH)
    unknown = set(arch) - _ARCHES
    if unknown:
        raise reader.fail(
            f"{where}.arch",
            f"unknown architecture {sorted(unknown)} (known: {', '.join(sorted(_ARCHES))})",
        )
    return Requirement(choices, reader.text(table, "reason", where), since, until, frozenset(arch))


def parse_requirements(data: str, source: str) -> Requirements:
    """Validate the TOML text of a requirements file."""
    reader = _Reader(source)
    try:
        document = tomllib.loads(data)
    except tomllib.TOMLDecodeError as err:
        raise reader.fail("(syntax)", str(err)) from None
    top = reader.table(document, "(top)", {"groups"})
    raw_groups = top.get("groups")
    groups_table = reader.table(raw_groups, "groups", set(raw_groups or ()))
    if not groups_table:
        raise reader.fail("groups", "no groups defined")
    groups = []
    for name, raw in groups_table.items():
        where = f"groups.{name}"
        if not _GROUP.fullmatch(name):
            raise reader.fail(where, "group names are lower-case words joined by '-'")
        table = reader.table(raw, where, {"required", "summary", "options"})
        options = table.get("options")
        if not isinstance(options, list) or not options:
            raise reader.fail(f"{where}.options", "expected at least one [[…options]] entry")
        requirements = tuple(
            _requirement(reader, o, f"{where}.options[{i}]") for i, o in enumerate(options)
        )
        seen: set[str] = set()
        for i, req in enumerate(requirements):
            if req.label in seen:
                raise reader.fail(f"{where}.options[{i}]", f"{req.label} is listed twice")
            seen.add(req.label)
        groups.append(
            Group(
                name,
                reader.flag(table, "required", where),
                reader.text(table, "summary", where),
                requirements,
            )
        )
    return Requirements(source, tuple(groups))


def _data_file(name: str) -> tuple[str, str]:
    resource = resources.files("k3py.kernel_config").joinpath(name)
    try:
        return resource.read_text(encoding="utf-8"), str(resource)
    except OSError as err:
        raise RequirementsError(f"cannot read {resource}: {err.strerror}; reinstall k3py") from None


def load_requirements(path: Path | None = None) -> Requirements:
    """The requirements shipped with k3py, or those in ``path``."""
    if path is None:
        text, source = _data_file(REQUIREMENTS_FILE)
        return parse_requirements(text, source)
    try:
        return parse_requirements(path.read_text(encoding="utf-8"), str(path))
    except OSError as err:
        raise RequirementsError(f"cannot read {path}: {err.strerror}") from None


def data_file(name: str) -> str:
    """The text of a file shipped in ``kernel-config/`` (the ``k3py.kernel_config`` package)."""
    return _data_file(name)[0]
