"""Errors of ``k3py check-config``: each says what is wrong with the input and what to do.

Exit codes follow sysexits: a file that cannot be opened is ``EX_NOINPUT`` (66), a file that is
not a kernel config (or a damaged one) is ``EX_DATAERR`` (65), a broken requirements file shipped
with k3py is ``EX_CONFIG`` (78), and a bad ``--require`` is ``EX_USAGE`` (64).
"""

from __future__ import annotations

from k3py.errors import K3pyError

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CONFIG = 78


class CheckConfigError(K3pyError):
    """Anything that stops the kernel check before it can report."""


class ConfigNotFoundError(CheckConfigError):
    """The kernel config (or kernel tree) to check does not exist or cannot be read."""

    exit_code = EX_NOINPUT


class NotAKernelConfigError(CheckConfigError):
    """The input exists but is not a kernel config, or is damaged (for example truncated)."""

    exit_code = EX_DATAERR


class RequirementsError(CheckConfigError):
    """The requirements data in kernel-config/ is invalid; the message names file and key."""

    exit_code = EX_CONFIG


class UnknownGroupError(CheckConfigError):
    """``--require`` named a group the requirements do not define."""

    exit_code = EX_USAGE
