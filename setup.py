"""Build glue: the subpackages under each folder that ``pyproject.toml``'s package-dir maps into
``k3py``.

Everything else about the distribution is in ``pyproject.toml``. setuptools' ``find`` directive
cannot give the packages it finds in ``cluster/`` the ``k3py.cluster`` prefix, so they are listed
here: every directory whose path is importable (setuptools treats those as packages even when
they hold only data, such as the generated documents and the board overlay).
"""

import tomllib
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def packages(mapping: dict[str, str]) -> list[str]:
    found: list[str] = []
    for name, folder in mapping.items():
        base = HERE / folder
        for directory in sorted([base, *(p for p in base.rglob("*") if p.is_dir())]):
            parts = directory.relative_to(base).parts
            if "__pycache__" in parts or any(p.startswith(".") for p in parts):
                continue
            if all(part.isidentifier() for part in parts):
                found.append(".".join((name, *parts)))
    return found


_config = tomllib.loads((HERE / "pyproject.toml").read_text())
setup(packages=packages(_config["tool"]["setuptools"]["package-dir"]))
