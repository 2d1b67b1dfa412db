"""systemd's readiness protocol: ``READY=1`` and ``STOPPING=1`` to ``$NOTIFY_SOCKET``.

The units the installer writes are ``Type=notify`` (as K3s's): systemd counts the server or agent
as started only once it serves, so ``systemctl start`` returns when ``kubectl`` can connect and
units ordered after it start after that. The protocol is one unix datagram per state change; it
is hand-written because it is a few lines and libsystemd's Python binding is not among the
board's packages. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _address(value: str) -> str | None:
    if value.startswith("@"):  # abstract namespace socket
        return "\0" + value[1:]
    return value if value.startswith("/") else None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (such as ``READY=1``); False when there is no socket or it is gone."""
    address = _address((os.environ if env is None else env).get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        # systemd went away or the socket is not ours to write: readiness is advisory.
        return False
    return True


def ready(status: str = "") -> bool:
    """Tell systemd this service is serving (``READY=1``, with an optional status line)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    """Tell systemd this service is shutting down on purpose."""
    return notify("STOPPING=1")
