"""The ``k3py`` package as mypy must see it: a folder of links in ``build/mypy/k3py``.

setuptools maps ``cluster/``, ``image/``, ``kernel-config/`` and ``board/`` into ``k3py`` through
``pyproject.toml``'s package-dir; mypy cannot follow that mapping, so ``make check`` (and ``make
venv``) rebuild this view from the same table and mypy reads the package there (``mypy_path``).
Run: ``python -m tools.mypy_view``.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VIEW = REPO / "build" / "mypy"


def build_view(repo: Path = REPO, view: Path = VIEW) -> Path:
    """(Re)create the view; returns the view's ``k3py`` folder."""
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    if view.is_dir():
        shutil.rmtree(view)
    for package, folder in sorted(mapping.items()):
        link = view.joinpath(*package.split("."))
        if package == "k3py":  # the root: its own files, next to the mapped folders
            link.mkdir(parents=True, exist_ok=True)
            for entry in sorted((repo / folder).iterdir()):
                if entry.name != "__pycache__":
                    (link / entry.name).symlink_to(entry)
        else:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(repo / folder, target_is_directory=True)
    return view / "k3py"


if __name__ == "__main__":
    print(build_view())
