"""A work queue of object keys for reconcile loops, as client-go's workqueue behaves.

A key is queued at most once however often it is added; a key being processed is not handed to
a second worker, and if it is added meanwhile it comes back once the first pass is ``done``.
Keys can be added after a delay (a Job's deadline, a node's grace period) or with a per-key
exponential back-off after failures; both wait on a :class:`Clock`, so tests drive them with a
virtual one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from k3py.cluster.client.clock import Clock, RealClock
from k3py.shutdown import cancel_and_wait

K = TypeVar("K", bound=Hashable)

BASE_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 60.0


class ShutDown(Exception):
    """The queue was shut down; workers should return."""


class WorkQueue(Generic[K]):
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or RealClock()
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._delayed: dict[K, tuple[float, asyncio.Task[None]]] = {}
        self._ready = asyncio.Event()
        self._shut_down = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        if self._shut_down:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed (the earliest request wins)."""
        if delay <= 0:
            self.add(key)
            return
        if self._shut_down:
            return
        due = self.clock.monotonic() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        task = asyncio.create_task(self._add_later(key, delay))
        self._delayed[key] = (due, task)

    async def _add_later(self, key: K, delay: float) -> None:
        await self.clock.sleep(delay)
        self._delayed.pop(key, None)
        self.add(key)

    def retry(self, key: K) -> float:
        """Add ``key`` again after its next back-off delay; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(BASE_RETRY_DELAY * float(1 << min(failures, 30)), MAX_RETRY_DELAY)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its back-off starts over."""
        self._failures.pop(key, None)

    async def get(self) -> K:
        """The next key to process; raises :class:`ShutDown` once the queue is shut down."""
        while not self._queue:
            if self._shut_down:
                raise ShutDown
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    async def shut_down(self) -> None:
        """Stop handing out keys (waiting workers get :class:`ShutDown`); drop delayed adds."""
        self._shut_down = True
        self._ready.set()
        tasks = [task for _, task in self._delayed.values()]
        self._delayed.clear()
        await cancel_and_wait(*tasks)
