"""Flash benchmark: writing a mostly empty 2 GiB image with its bmap versus writing all of it.

``run()`` returns a dict for the benchmark runner; ``python -m bench.flash_bench`` prints it as
JSON. The image is made the way the image builder makes one (MBR, FAT boot partition, ext4 root
from ``mke2fs -d`` holding some random files) and written, in the same run, to the same target:
a loop device when running as root, else an image file. Each mode is timed end to end through
the real pipeline (write, sync, read-back verification), and again without verification, so the
report gives the bmap-versus-full ratio (bmaptool reports 5-7x over dd; our budget is at least
5x) and what verification costs. ``bmaptool copy`` with the same bmap is timed as a peer when it
is installed. The image file stays in the page cache between runs, as on a build host that has
just made it; the target is synced by every run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from k3py.image.bmap import create_bmap
from k3py.image.flash.flashing import FlashSettings, flash
from tests.flash.diskimage import build_image
from tests.flash.fakes import FakeConsole

MIB = 1 << 20
BUDGET_RATIO = 5.0


@contextlib.contextmanager
def _target(directory: Path, size: int) -> Iterator[tuple[str, Path]]:
    """A loop device as root, else a plain file; the backing file is sparse."""
    backing = directory / "card.img"
    with backing.open("wb") as file:
        file.truncate(size)
    if os.geteuid() == 0 and shutil.which("losetup"):
        result = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode == 0:
            device = Path(result.stdout.strip())
            try:
                yield "loop", device
            finally:
                subprocess.run(["losetup", "--detach", str(device)], check=False, timeout=30)
            return
    yield "file", backing


def _timed_flash(
    image: Path, target: Path, kind: str, steps: dict[str, dict[str, float]], name: str,
    **options: Any,
) -> float:  # fmt: skip
    settings = FlashSettings(
        image=image, target=target, assume_yes=True, allow_file=kind == "file", **options
    )
    started = time.monotonic()
    report = flash(settings, FakeConsole())
    steps[name] = report.timings
    return round(time.monotonic() - started, 3)


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    size_mib = 512 if quick else 2048
    payload_mib = 32 if quick else 96
    with tempfile.TemporaryDirectory(prefix="k3py-flash-bench-", dir=directory) as scratch:
        work = Path(scratch)
        files = {f"payload{i}.bin": os.urandom(8 * MIB) for i in range(payload_mib // 8)}
        files["small.txt"] = b"k3py\n"
        started = time.monotonic()
        image = build_image(work / "bench.img", files, size_mib=size_mib, boot_mib=64)
        bmap = create_bmap(image.path, work / "bench.bmap")
        made = time.monotonic() - started
        zst = None
        if shutil.which("zstd"):
            subprocess.run(["zstd", "-q", "-1", "-T0", "-k", str(image.path)], check=True)
            zst = image.path.with_name(image.path.name + ".zst")

        steps: dict[str, dict[str, float]] = {}
        with _target(work, image.size + 64 * MIB) as (kind, target):
            # A used card has every block allocated; so must the loop device's backing file,
            # or the first full write would also pay for allocating it.
            _timed_flash(image.path, target, kind, {}, "warm-up", use_bmap=False, verify=False)
            runs: list[tuple[str, Path, dict[str, bool]]] = [
                ("bmap", image.path, {}),
                ("full", image.path, {"use_bmap": False}),
                ("bmap_no_verify", image.path, {"verify": False}),
                ("full_no_verify", image.path, {"use_bmap": False, "verify": False}),
            ]
            if zst is not None:
                runs.append(("bmap_zst", zst, {}))
            seconds = {
                name: _timed_flash(source, target, kind, steps, name, **options)
                for name, source, options in runs
            }
            if shutil.which("bmaptool"):
                started = time.monotonic()
                subprocess.run(
                    ["bmaptool", "-q", "copy", "--bmap", str(work / "bench.bmap"),
                     str(image.path), str(target)],
                    check=True, capture_output=True,
                )  # fmt: skip
                seconds["bmaptool_copy"] = round(time.monotonic() - started, 3)

    ratio = seconds["full"] / seconds["bmap"]
    return {
        "image": {
            "size_mib": size_mib,
            "mapped_mib": round(bmap.mapped_size / MIB, 1),
            "mapped_percent": round(100 * bmap.mapped_size / image.size, 1),
            "build_and_bmap_s": round(made, 2),
        },
        "target": kind,
        "seconds": seconds,
        "steps_seconds": steps,
        "bmap_vs_full_ratio": round(ratio, 1),
        "bmap_vs_full_ratio_no_verify": round(
            seconds["full_no_verify"] / seconds["bmap_no_verify"], 1
        ),
        "verify_overhead_percent": {
            "bmap": round(100 * (seconds["bmap"] / seconds["bmap_no_verify"] - 1), 1),
            "full": round(100 * (seconds["full"] / seconds["full_no_verify"] - 1), 1),
        },
        "budget": {"bmap_vs_full_ratio_min": BUDGET_RATIO, "met": ratio >= BUDGET_RATIO},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 512 MiB image instead of 2 GiB")
    parser.add_argument("--dir", type=Path, help="where to make the image (default: $TMPDIR)")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, directory=args.dir), indent=2))


if __name__ == "__main__":
    main()
