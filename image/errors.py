"""The image builder's one error type: what went wrong in which step, and what to do about it.

Only the CLI catches it (through :class:`k3py.errors.K3pyError`); a failed tool names the exact
command so it can be rerun by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

from k3py.errors import K3pyError


class ImageError(K3pyError):
    """A board image cannot be built; the message says why and what to do."""

    exit_code = 1


class BoardError(ImageError):
    """A board description is invalid; the message names the file and the key."""

    exit_code = 65


class GateError(ImageError):
    """A build gate (kernel config, ELF audit) found offenders; the build stops."""

    exit_code = 3


def command_failed(argv: Sequence[str], returncode: int, output: str) -> ImageError:
    """An error for a failed tool that shows the command to rerun and its last output lines."""
    tail = "\n".join(output.strip().splitlines()[-15:])
    shown = " ".join(argv)
    return ImageError(f"command failed with exit code {returncode}: {shown}\n{tail}".rstrip())
