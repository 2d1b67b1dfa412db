"""k3py: a lightweight Kubernetes-compatible cluster for ARM edge boards.

The import package joins the repository's folders through setuptools' package-dir mapping
(``pyproject.toml``): ``k3py.cluster`` (the firmware that runs on boards, from ``cluster/``),
``k3py.image`` (the build host's pipeline, from ``image/``), and two data-only packages, the
kernel requirements (``k3py.kernel_config``, from ``kernel-config/``) and the board descriptions
(``k3py.board``, from ``board/``). ``k3py.cli`` is the one command-line edge.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("k3py")
except _metadata.PackageNotFoundError:  # running from a tree that was never installed
    __version__ = "0.0.0+unknown"
