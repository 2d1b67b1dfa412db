"""Build gates: checks that stop the build with a report instead of shipping a broken image.

The kernel gate asks ``k3py check-config --kernel-dir <rootfs> --require vxlan,ipvs,nftables``
(run as a subprocess of the build host's own k3py, so the checker's verdict is exactly what a
person gets on the command line) and also verifies that every module the cluster relies on is
present after pruning. The ELF gate is :mod:`k3py.image.elfaudit`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CHECK_CONFIG_REQUIRE = "vxlan,ipvs,nftables"
NOT_AVAILABLE = "is not available in this build of k3py"


@dataclass
class KernelGateResult:
    status: str  # "pass", "fail" or "unavailable" (no checker in this tree yet)
    exit_code: int | None
    command: list[str]
    report: str
    missing_modules: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "command": " ".join(self.command),
            "missing_modules": self.missing_modules,
            "report_tail": self.report.strip().splitlines()[-5:],
        }


def _failures(output: str) -> str:
    """The checker's failed findings, one per line, from its ``--json`` report."""
    try:
        groups = json.loads(output)["groups"]
        return "\n".join(
            f"{f['name']}: {f['detail']}" for g in groups for f in g["findings"] if f.get("failure")
        )
    except (ValueError, KeyError, TypeError):
        return ""


def check_kernel(rootfs: Path, version: str, required_modules: list[str]) -> KernelGateResult:
    """Run the kernel checker against the image's root and its pruned module tree."""
    modules_dir = rootfs / "usr/lib/modules" / version
    present = {p.name.split(".ko")[0].replace("-", "_") for p in modules_dir.rglob("*.ko*")}
    builtin_file = modules_dir / "modules.builtin"
    if builtin_file.exists():
        present |= {
            line.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")
            for line in builtin_file.read_text().splitlines()
        }
    missing = [
        f"{m} (expected in /usr/lib/modules/{version}/kernel)"
        for m in required_modules
        if m.replace("-", "_") not in present
    ]
    argv = [sys.executable, "-m", "k3py", "check-config", "--kernel-dir", str(rootfs),
            "--require", CHECK_CONFIG_REQUIRE, "--json"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    report = _failures(result.stdout) or (result.stdout + result.stderr)
    if result.returncode != 0 and (NOT_AVAILABLE in report or "unrecognized arguments" in report):
        status = "fail" if missing else "unavailable"
        return KernelGateResult(status, None, argv, report, missing)
    status = "pass" if result.returncode == 0 and not missing else "fail"
    return KernelGateResult(status, result.returncode, argv, report, missing)
