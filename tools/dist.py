"""``make dist``: the sdist and the wheel of this tree, into ``dist/``.

Built from the same export the images' firmware is built from (in a git checkout, its tracked
files only), so an untracked file of the working tree never reaches a shipped artefact either.
``install.sh`` is copied beside them with the wheel's name and sha256 written in (and with
``--mirror URL``, ``make dist MIRROR=URL``, the URL the directory will be served from): a
fleet's mirror serving ``dist/`` lets the first server install with
``curl -sfL URL/install.sh | sh -``. Run: ``python -m tools.dist [--outdir dist] [--mirror URL]``.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from k3py.image.firmware import export_tree

REPO = Path(__file__).resolve().parent.parent


def stamp_installer(script: str, wheel: Path, mirror: str = "") -> str:
    """``install.sh`` made for ``wheel``, served with it from ``mirror`` (if given)."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lines = {
        "DIST_URL=${INSTALL_K3PY_MIRROR:-}": f"DIST_URL=${{INSTALL_K3PY_MIRROR:-{mirror}}}",
        "DIST_WHEEL=": f"DIST_WHEEL={wheel.name}",
        "DIST_SHA256=": f"DIST_SHA256={digest}",
    }
    out = script.splitlines(keepends=True)
    for index, line in enumerate(out):
        stamped = lines.pop(line.rstrip("\n"), None)
        if stamped is not None:
            out[index] = stamped + "\n"
    if lines:
        raise ValueError(f"install.sh lacks the lines {sorted(lines)}")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=REPO / "dist")
    parser.add_argument("--mirror", default="", help="the URL dist/ will be served from")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="k3py-dist-") as scratch:
        export = export_tree(REPO, Path(scratch, "src"))
        argv_build = [sys.executable, "-m", "build", "--outdir", str(args.outdir.resolve()), "."]
        code = subprocess.run(argv_build, cwd=export, check=False).returncode
        if code == 0:
            # The installer beside the wheel: the first server installs from these two files.
            wheel = max(args.outdir.glob("k3py-*.whl"))
            script = (export / "cluster" / "install" / "install.sh").read_text()
            (args.outdir / "install.sh").write_text(stamp_installer(script, wheel, args.mirror))
        return code


if __name__ == "__main__":
    sys.exit(main())
