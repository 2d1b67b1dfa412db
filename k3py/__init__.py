"""k3py: a lightweight Kubernetes-compatible cluster for ARM edge boards.

The import package joins the repository's folders: ``k3py.cluster`` (the firmware that runs on
boards), ``k3py.image`` (the build host's pipeline) and the kernel requirements shipped as data
in ``k3py/kernel_config``. ``k3py.cli`` is the one command-line edge.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("k3py")
except _metadata.PackageNotFoundError:  # running from a tree that was never installed
    __version__ = "0.0.0+unknown"
