"""``k3py check-config``: whether a kernel has what k3py needs, on a board or at image build.

The requirements are data (``kernel-config/requirements.toml``, loaded by
:mod:`~k3py.cluster.checkconfig.requirements`); :mod:`~k3py.cluster.checkconfig.check` judges a
kernel config against them (with its modules when the kernel is unpacked on disk), and
:mod:`~k3py.cluster.checkconfig.system` adds what only a running system can tell. Standard library
only: this runs on the boards. The image builder calls :func:`check_kernel_dir`.
"""

from k3py.cluster.checkconfig.check import (
    check_config_file,
    check_kernel_dir,
    check_running_system,
)
from k3py.cluster.checkconfig.report import Finding, GroupReport, Report, State

__all__ = [
    "Finding",
    "GroupReport",
    "Report",
    "State",
    "check_config_file",
    "check_kernel_dir",
    "check_running_system",
]
