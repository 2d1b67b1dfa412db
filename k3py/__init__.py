"""k3py: a lightweight Kubernetes-compatible cluster for ARM edge boards.

The import package joins the repository's folders through setuptools' package-dir mapping
(``pyproject.toml``): ``k3py.cluster`` (the firmware that runs on boards, from ``cluster/``),
``k3py.image`` (the build host's pipeline, from ``image/``), and two data-only packages, the
kernel requirements (``k3py.kernel_config``, from ``kernel-config/``) and the board descriptions
(``k3py.board``, from ``board/``). ``k3py.cli`` is the one command-line edge.
"""

import os as _os
import sys as _sys


def _installed_version() -> str:
    """The version in the installed distribution's metadata (``k3py-*.dist-info/METADATA``).

    The file is read directly, in ``sys.path`` order as :mod:`importlib.metadata` searches:
    importing that module costs a long-running agent about 1 MB of resident memory (zipfile,
    csv, importlib.resources) for this one line. Layouts other than a ``.dist-info`` folder
    (an ``.egg-info`` of a distribution package) are left to :mod:`importlib.metadata`.
    """
    for entry in _sys.path:
        try:
            names = _os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("k3py-") and name.endswith(".dist-info"):
                try:
                    with open(_os.path.join(entry or ".", name, "METADATA")) as file:
                        for line in file:
                            if line.startswith("Version:"):
                                return line.partition(":")[2].strip()
                            if not line.strip():
                                break  # the headers end at the first blank line
                except OSError:
                    pass
    from importlib import metadata

    try:
        return metadata.version("k3py")
    except metadata.PackageNotFoundError:  # running from a tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # ``k3py.__version__`` is read on first use: the firmware launcher imports this package
    # at every boot and never needs it (the search of sys.path costs an emulated board 30 ms).
    if name != "__version__":
        raise AttributeError(f"module 'k3py' has no attribute {name!r}")
    version = globals()["__version__"] = _installed_version()
    return version
