"""OTA benchmark: bytes a board downloads for a system bundle that changes only k3py.

Two images of the same board are built in the same run from two exports of this tree (``git
archive HEAD``) that differ only in k3py: one module gains a line and the version goes up a patch
level. The second image becomes a system bundle; the first image's slot A plays the board's
running slot. The delta is what :mod:`k3py.cluster.ota.blocks` would fetch (blocks found nowhere
in the running slot), plus the index itself, against the full slot; at 64 KiB blocks (what
bundles use) and, for comparison, 16 and 4 KiB. RAUC's adaptive updates are the peer; the goal
is at most 5 % of the slot. ``K3PY_OTA_BENCH_DIR`` reuses a directory holding ``out-a`` and
``out-b`` from an earlier run instead of building.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from k3py.cluster.ota import blocks, bundle
from k3py.image.ota import bundler

BOARD, ROLE = "qemu-virt-arm64", "agent"
REPO = Path(__file__).resolve().parent.parent
BUDGET_PERCENT = 5.0


def _export(target: Path, changed: bool) -> None:
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    if changed:
        module = target / "cluster/agent/agent.py"
        module.write_text(module.read_text() + "# a changed k3py\n")
        pyproject = target / "pyproject.toml"
        text = pyproject.read_text()
        line = next(x for x in text.splitlines() if x.startswith("version = "))
        major, minor, patch = line.split('"')[1].split(".")[:3]
        pyproject.write_text(text.replace(line, f'version = "{major}.{minor}.{int(patch) + 1}"'))


def _build(scratch: Path, name: str) -> Path:
    _export(scratch / name, changed=name == "b")
    out = scratch / f"out-{name}"
    subprocess.run([sys.executable, "-m", "k3py", "image", "build", "--board", BOARD, "--role",
                    ROLE, "--firmware", str(scratch / name), "--out", str(out), "--work-dir",
                    str(scratch / f"work-{name}")], check=True, capture_output=True)  # fmt: skip
    return out / f"{BOARD}-{ROLE}.img"


def _slot(image: Path, target: Path) -> Path:
    facts = bundler.image_manifest(image)
    part = next(p for p in facts["partitions"] if p["name"] == "rootA")  # type: ignore[attr-defined]
    with image.open("rb") as source, target.open("wb") as out:
        source.seek(part["start"])
        left = int(part["size"])
        while left:
            chunk = source.read(min(left, 1 << 20))
            out.write(chunk)
            left -= len(chunk)
    return target


def run(*, quick: bool = False) -> dict[str, Any]:
    reuse = os.environ.get("K3PY_OTA_BENCH_DIR")
    with tempfile.TemporaryDirectory(prefix="k3py-ota-bench-") as tmp:
        scratch = Path(reuse) if reuse else Path(tmp)
        image = f"{BOARD}-{ROLE}.img"
        started = time.monotonic()
        if reuse:
            old, new = scratch / "out-a" / image, scratch / "out-b" / image
        else:
            old, new = _build(scratch, "a"), _build(scratch, "b")
        build_s = time.monotonic() - started
        work = Path(tmp)
        bundler.keygen(work / "k.pem", work / "k.pub")
        started = time.monotonic()
        path = work / "system.k3pyb"
        manifest = bundler.system_bundle(path, bundler.load_private_key(work / "k.pem"), new,
                                         minimum_version=None)  # fmt: skip
        bundle_s = time.monotonic() - started
        started = time.monotonic()
        bundle.verify(path, bundle.load_public_key(work / "k.pub"), None)
        verify_s = time.monotonic() - started
        running, slot = _slot(old, work / "running"), _slot(new, work / "new")
        full = slot.stat().st_size
        per_size: dict[str, Any] = {}
        for size in (65536, 16384, 4096):
            started = time.monotonic()
            index = blocks.build_index(slot, size)
            delta = blocks.plan(index, blocks.local_blocks([running], size), size)
            per_size[str(size)] = {
                "blocks": delta.total, "missing": len(delta.missing),
                "download_bytes": delta.download_bytes + len(index),
                "percent": round(100 * (delta.download_bytes + len(index)) / full, 3),
                "plan_s": round(time.monotonic() - started, 2),
            }  # fmt: skip
    chosen = per_size["65536"]
    return {
        "benchmark": "ota",
        "board": BOARD,
        "bundle_version": manifest.version,
        "slot_bytes": full,
        "by_block_size": per_size,
        "builds_s": round(build_s, 1),
        "summary": {
            "system_delta_percent": chosen["percent"],
            "system_delta_bytes": chosen["download_bytes"],
            "slot_mib": round(full / 2**20, 1),
            "bundle_write_s": round(bundle_s, 2),
            "bundle_verify_s": round(verify_s, 2),
        },
        "budget": {
            "system_delta_percent": {
                "budget": BUDGET_PERCENT,
                "met": chosen["percent"] <= BUDGET_PERCENT,
            }
        },  # fmt: skip
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
