"""Image build benchmark: cold and warm build time per board and role, and image sizes.

Each build runs ``k3py image build`` as a user would, into a scratch directory. Warm builds use
the machine's package cache; the cold build uses an empty cache, so it includes resolving and
downloading every package from Debian's archive. Sizes and the biggest contributors come from
each build's ``manifest.json``. Peers for scale: pi-gen and debos take tens of minutes per image;
K3s's own binary is about 70 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BOARDS = ("qemu-virt-arm64", "qemu-virt-armv7", "rpi4-arm64", "rpi3-armv7")
ROLES = ("agent", "server")
MIB = 1024 * 1024
WARM_BUILD_BUDGET_S = 60.0
AGENT_COMPRESSED_BUDGET_MB = 100.0


def build(board: str, role: str, scratch: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Build one image; return its wall time and its manifest."""
    out = scratch / f"out-{board}-{role}"
    argv = [sys.executable, "-m", "k3py", "image", "build", "--board", board, "--role", role]
    argv += ["--out", str(out), "--work-dir", str(scratch / f"build-{board}-{role}")]
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    manifest = json.loads((out / f"{board}-{role}.manifest.json").read_text())
    return {"seconds": round(elapsed, 1), "manifest": manifest}


def run(*, quick: bool = False) -> dict[str, Any]:
    boards = BOARDS[:1] if quick else BOARDS
    summary: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="k3py-image-bench-") as tmp:
        scratch = Path(tmp)
        cold = build(boards[0], "agent", scratch / "cold", cache_dir=scratch / "empty-cache")
        summary[f"cold_build_s_{boards[0]}_agent"] = cold["seconds"]
        summary[f"cold_downloaded_mib_{boards[0]}_agent"] = round(
            cold["manifest"]["downloaded_bytes"] / MIB, 1
        )
        for board in boards:
            for role in ROLES:
                result = build(board, role, scratch / "warm")
                sizes = result["manifest"]["sizes"]
                name = f"{board}_{role}"
                warm_key, size_key = f"warm_build_s_{name}", f"compressed_mb_{name}"
                summary[warm_key] = result["seconds"]
                summary[size_key] = round(sizes["compressed_bytes"] / 1e6, 1)
                budget[warm_key] = {
                    "budget": WARM_BUILD_BUDGET_S,
                    "met": result["seconds"] <= WARM_BUILD_BUDGET_S,
                }
                if role == "agent":
                    budget[size_key] = {
                        "budget": AGENT_COMPRESSED_BUDGET_MB,
                        "met": sizes["compressed_bytes"] / 1e6 <= AGENT_COMPRESSED_BUDGET_MB,
                    }
                details[name] = {
                    "build_s": result["seconds"],
                    "image_mib": round(sizes["image_bytes"] / MIB, 1),
                    "allocated_mib": round(sizes["image_allocated_bytes"] / MIB, 1),
                    "rootfs_used_mib": round(sizes["rootfs_used_bytes"] / MIB, 1),
                    "compressed_mib": round(sizes["compressed_bytes"] / MIB, 1),
                    "biggest": result["manifest"]["biggest"][:5],
                    "step_timings_s": result["manifest"]["timings"],
                }
    return {"benchmark": "image", "summary": summary, "budget": budget, "details": details}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
