"""Showing a report: the grouped table for people, JSON for machines, a fragment for defconfigs.

The table lists each group with its rows (``enabled``, ``module``, ``ok``, ``warning``,
``missing``), a hint under every row that needs action, and ends with ``STATUS: pass`` or
``STATUS: N failures`` as its last line. Colour is used only when asked (the CLI asks when
standard output is a terminal and ``NO_COLOR`` is unset).
"""

from __future__ import annotations

import json

from k3py.cluster.checkconfig.report import Report, State

_NAME_WIDTH = 32
_COLOURS = {
    State.ENABLED: "32",
    State.MODULE: "32",
    State.OK: "32",
    State.WARNING: "33",
    State.MISSING: "1;31",
}


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour else text


def _heading(report: Report) -> list[str]:
    kernel = []
    if report.version:
        kernel.append(f"Linux {report.version[0]}.{report.version[1]}")
    if report.arch:
        kernel.append(report.arch)
    if report.release:
        kernel.append(f"release {report.release}")
    lines = [f"kernel config: {report.source}" + (f" ({', '.join(kernel)})" if kernel else "")]
    lines.append(f"modules: {report.modules}")
    return lines


def table(report: Report, *, colour: bool = False) -> str:
    # Long names (alternatives) overflow the column rather than widen every row.
    width = min(max((len(f.name) for f in report.findings()), default=20), _NAME_WIDTH) + 2
    lines = _heading(report)
    for group in report.groups:
        kind = "required" if group.required else "optional"
        lines.append("")
        lines.append(_paint(f"{group.name} ({kind})", "1", colour) + f": {group.summary}")
        for finding in group.findings:
            state = _paint(f"{finding.state.value:<8}", _COLOURS[finding.state], colour)
            detail = f" {finding.detail}" if finding.detail else ""
            name = finding.name if len(finding.name) < width else finding.name + " "
            lines.append(f"  {name:<{width}}{state}{detail}".rstrip())
            if finding.hint:
                lines.append(f"  {'':<{width}}  -> {finding.hint}")
    lines.append("")
    warnings = f"{report.warnings} warning" + ("" if report.warnings == 1 else "s")
    lines.append(f"{report.failures} missing (required), {warnings}")
    status = _paint(report.status, "32" if report.failures == 0 else "1;31", colour)
    lines.append(f"STATUS: {status}")
    return "\n".join(lines) + "\n"


def as_json(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2) + "\n"


def missing_fragment(report: Report) -> str:
    """``CONFIG_…=y`` lines fixing every failure; failures no option fixes become comments."""
    lines = [f"# k3py check-config: options that fix the failures of {report.source}"]
    seen: set[str] = set()
    for finding in report.findings():
        if not finding.failure:
            continue
        if not finding.fix:
            lines.append(f"# {finding.name}: {finding.detail} ({finding.hint})")
        for line in finding.fix:
            if line not in seen:
                seen.add(line)
                lines.append(line)
    if report.failures == 0:
        lines.append("# nothing is missing")
    return "\n".join(lines) + "\n"
