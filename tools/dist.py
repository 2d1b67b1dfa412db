"""``make dist``: the sdist and the wheel of this tree, into ``dist/``.

Built from the same export the images' firmware is built from (in a git checkout, its tracked
files only), so an untracked file of the working tree never reaches a shipped artefact either.
``install.sh`` is copied beside them. Run: ``python -m tools.dist [--outdir dist]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from k3py.image.firmware import export_tree

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=REPO / "dist")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="k3py-dist-") as scratch:
        export = export_tree(REPO, Path(scratch, "src"))
        argv_build = [sys.executable, "-m", "build", "--outdir", str(args.outdir.resolve()), "."]
        code = subprocess.run(argv_build, cwd=export, check=False).returncode
        if code == 0:
            # The installer beside the wheel: the first server installs from these two files.
            shutil.copy(export / "cluster" / "install" / "install.sh", args.outdir / "install.sh")
        return code


if __name__ == "__main__":
    sys.exit(main())
