"""How the long-running commands (server and agent) and their background tasks stop.

SIGTERM (init, ``docker stop``, systemd) and SIGINT (Ctrl-C) both end :func:`until_signalled`,
so the caller can shut its parts down in order instead of being cut off mid-write; each part
then cancels its background tasks and waits until they have really ended
(:func:`cancel_and_wait`), so nothing of it runs on after ``stop()`` or ``close()`` returns.
"""

from __future__ import annotations

import asyncio
import logging
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


async def cancel_and_wait(
    *tasks: asyncio.Future[Any] | None, log: logging.Logger | None = None
) -> None:
    """Cancel every task (None: none started), then wait for each to end.

    A task's own ``CancelledError`` ends here. Any other error it ended with (before or while
    unwinding) is the caller's to see; with ``log``, it is logged there with the task's name
    instead, and every task is still waited for: a stop that must go on regardless of how its
    parts ended passes its logger.
    """
    started = [task for task in tasks if task is not None]
    current = asyncio.current_task()
    # Cancellations of the caller already under way (a stop in a ``finally``) are not new ones.
    cancelling = current.cancelling() if current is not None else 0
    for task in started:
        task.cancel()
    for task in started:
        try:
            await task
        except asyncio.CancelledError:
            # The caller's own cancellation, arriving meanwhile, is not swallowed with the task's.
            if current is not None and current.cancelling() > cancelling:
                raise
        except Exception:
            if log is None:
                raise
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.exception("background task %s failed", name)
