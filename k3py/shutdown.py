"""Waiting for the signal that asks a long-running command (server or agent) to stop.

SIGTERM (init, ``docker stop``, systemd) and SIGINT (Ctrl-C) both end the wait, so the caller
can shut its parts down in order instead of being cut off mid-write.
"""

from __future__ import annotations

import asyncio
import signal


async def until_signalled() -> None:
    """Return once SIGTERM or SIGINT arrives; the handlers are removed again afterwards."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
