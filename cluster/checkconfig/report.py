"""What a kernel check found: findings grouped as the requirements are, and the verdict.

Every row of the report has one state. ``enabled`` and ``module`` mean a kernel option is there
(built in, or as a module that was found); ``ok`` is a running-system check that passed;
``warning`` is worth knowing but not a failure (an optional feature missing, swap on);
``missing`` is a failure. The exit code of ``k3py check-config`` is the number of failures,
capped at 63 so that it never collides with the sysexits codes used for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_EXIT_CODE = 63


class State(StrEnum):
    ENABLED = "enabled"
    MODULE = "module"
    OK = "ok"
    WARNING = "warning"
    MISSING = "missing"


@dataclass(frozen=True)
class Finding:
    """One row: an option (``CONFIG_VXLAN``) or a running-system check (``swap``)."""

    name: str
    state: State
    detail: str = ""
    hint: str = ""
    fix: tuple[str, ...] = ()  # config lines that fix a failure, e.g. ("CONFIG_VXLAN=y",)

    @property
    def failure(self) -> bool:
        return self.state is State.MISSING


@dataclass(frozen=True)
class GroupReport:
    name: str
    required: bool
    summary: str
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class Report:
    """The result of one check; ``release`` and ``version`` are None when unknown."""

    source: str
    release: str | None
    version: tuple[int, int] | None
    arch: str | None
    modules: str  # where =m options were looked up, or why they were not
    groups: tuple[GroupReport, ...]
    required_groups: tuple[str, ...] = field(default=())

    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for g in self.groups for f in g.findings)

    @property
    def failures(self) -> int:
        return sum(f.failure for f in self.findings())

    @property
    def warnings(self) -> int:
        return sum(f.state is State.WARNING for f in self.findings())

    @property
    def exit_code(self) -> int:
        return min(self.failures, MAX_EXIT_CODE)

    @property
    def status(self) -> str:
        return "pass" if self.failures == 0 else f"{self.failures} failures"

    def finding(self, name: str) -> Finding:
        """The first row called ``name`` (``CONFIG_VXLAN``, ``swap``)."""
        for f in self.findings():
            if f.name == name:
                return f
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "release": self.release,
            "version": f"{self.version[0]}.{self.version[1]}" if self.version else None,
            "arch": self.arch,
            "modules": self.modules,
            "required_groups": list(self.required_groups),
            "groups": [
                {
                    "name": g.name,
                    "required": g.required,
                    "summary": g.summary,
                    "findings": [
                        {
                            "name": f.name,
                            "state": f.state.value,
                            "failure": f.failure,
                            "detail": f.detail,
                            "hint": f.hint,
                            "fix": list(f.fix),
                        }
                        for f in g.findings
                    ],
                }
                for g in self.groups
            ],
            "failures": self.failures,
            "warnings": self.warnings,
            "status": self.status,
        }
