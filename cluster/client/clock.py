"""Time as the client, controllers and agent see it: a small ``Clock`` protocol and two clocks.

Everything that waits or compares times (informer back-off, work-queue delays, lease renewal,
node grace periods, rollout deadlines) asks a :class:`Clock` instead of ``time`` and
``asyncio.sleep``. :class:`RealClock` is the wall and monotonic clocks of the machine;
:class:`FakeClock` is a virtual clock that only moves when a test calls :meth:`FakeClock.advance`,
so hours of cluster time run in milliseconds and without flaky sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and deadlines)."""
        ...

    def now(self) -> datetime.datetime:
        """The current wall time, timezone-aware UTC (for timestamps written into objects)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


_EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class FakeClock:
    """A virtual clock: sleepers wake only when :meth:`advance` moves time past their deadline."""

    def __init__(self, start: datetime.datetime = _EPOCH) -> None:
        self._start = start
        self._offset = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._offset

    def now(self) -> datetime.datetime:
        return self._start + datetime.timedelta(seconds=self._offset)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._offset + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks wait on this clock (cancelled waits excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) if live else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order.

        Between wake-ups the event loop runs, so a woken task that sleeps again within the
        advanced span is woken too (a loop that ticks every 5 s ticks 12 times in one minute).
        """
        target = self._offset + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self._offset = max(self._offset, deadline)
            future.set_result(None)
            await _settle()
        self._offset = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Let ready tasks run (a few loop turns) before time moves again."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` of ``clock``'s time passes; True if set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, sleeper):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return event.is_set()
