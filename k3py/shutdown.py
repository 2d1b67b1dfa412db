"""How the long-running commands (server and agent) and their background tasks stop.

SIGTERM (init, ``docker stop``, systemd) and SIGINT (Ctrl-C) both end :func:`until_signalled`,
so the caller can shut its parts down in order instead of being cut off mid-write; each part
then cancels its background tasks and waits until they have really ended
(:func:`cancel_and_wait`), so nothing of it runs on after ``stop()`` or ``close()`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any


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


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task (None: none started), then wait for each to end.

    A task's own ``CancelledError`` ends here; any other error it raises while unwinding is
    the caller's to see.
    """
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task
