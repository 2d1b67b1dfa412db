"""The flash command's one error type.

Every refusal or failure of ``k3py flash`` (bad image, unsafe target, write or verification
failure) is a :class:`FlashError` whose message is one line saying what is wrong, what state the
target is in when that matters, and what to do. Only the CLI catches it.
"""

from __future__ import annotations

from k3py.errors import K3pyError


class FlashError(K3pyError):
    """Flashing was refused or failed; the message says why and what to do."""

    exit_code = 1
