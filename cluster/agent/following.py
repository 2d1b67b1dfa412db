"""What the agent keeps fresh for its pods, by key: the keys wanted, what is held for them, and
the task that refreshes them.

:class:`~k3py.cluster.agent.referenced.ReferencedObjects` (ConfigMaps and Secrets) and
:class:`~k3py.cluster.agent.satokens.PodTokens` (ServiceAccount tokens) both follow the set of
keys their pods need, forget what no pod needs any more, wake their task when a new key must
be fetched at once, and start and stop that task with the agent. Each decides in its own
``_run`` when it reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Following(Generic[K, V]):
    """The wanted keys, what is held for each (``_held``) and the refreshing task."""

    def __init__(self, task_name: str) -> None:
        self._task_name = task_name
        self._wanted: set[K] = set()
        self._held: dict[K, V] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _follow(self, wanted: set[K]) -> None:
        """Keep exactly ``wanted``; a key not held yet wakes the task to fetch it at once."""
        self._wanted = set(wanted)
        for key in [k for k in self._held if k not in wanted]:
            del self._held[key]
        if wanted - self._held.keys():
            self._wake.set()

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._task_name)
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
