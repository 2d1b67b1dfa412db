"""In-process watch fan-out: one hub, one bounded queue per watcher, replay from the log.

The datastore publishes each committed batch of events to the hub on the event loop; the hub
appends the events matching each watcher's prefix to that watcher's queue. A watcher whose queue
would exceed ``max_pending`` events or ``max_pending_bytes`` bytes of values (large objects
fill memory long before the event count is reached) is cut off with :class:`WatchExpired` and
its queue dropped,
so one slow client can neither grow memory without bound nor hold up the writer or other
watchers. A watcher that starts from an older revision first replays the log from the datastore
(lazily, a chunk per iteration, so a long replay costs no memory) up to the revision that was
published when it registered, then continues with its live queue: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from k3py.cluster.server.store.model import Event, WatchExpired

# Reads events with after < revision <= upto under a prefix, in revision order, at most limit
# of them; raises Compacted when ``after`` is no longer in the log.
ReplaySource = Callable[[str, int, int, int], Awaitable[list[Event]]]

REPLAY_CHUNK = 500
DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_PENDING_BYTES = 32 * 1024 * 1024


def _event_bytes(event: Event) -> int:
    return len(event.kv.value) + (len(event.prev.value) if event.prev is not None else 0)


class HubWatch:
    """One watcher: replay first, then the live queue. Iterate with ``async for``."""

    def __init__(
        self,
        hub: WatchHub,
        prefix: str,
        after: int,
        replay_upto: int,
        max_pending: int,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.prefix = prefix
        self._hub = hub
        self._after = after  # the last revision handed to the consumer (or skipped)
        self._replay_upto = replay_upto
        self._max_pending = max_pending
        self._pending: deque[list[Event]] = deque()
        self._pending_count = 0
        self._max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None

    def __aiter__(self) -> HubWatch:
        return self

    async def __anext__(self) -> list[Event]:
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                self._closed = True
                raise error
            if self._after < self._replay_upto and not self._closed:
                batch = await self._replay_chunk()
                if batch and not self._closed:
                    return batch
                continue
            if self._pending:
                events = self._take_pending()
                if events:
                    return events
                continue
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None

    def close(self) -> None:
        """Stop watching; a pending iteration ends, and queued events are dropped."""
        self._hub.unregister(self)
        self._closed = True
        self._pending.clear()
        self._pending_count = 0
        self._pending_bytes = 0
        self._wake()

    # The hub's side -------------------------------------------------------------------------

    def offer(self, events: Sequence[Event]) -> bool:
        """Queue the matching events; False if the watcher overflowed and was cut off."""
        matching = [e for e in events if e.kv.key.startswith(self.prefix)]
        if not matching:
            return True
        size = sum(_event_bytes(e) for e in matching)
        too_many = self._pending_count + len(matching) > self._max_pending
        if too_many or self._pending_bytes + size > self._max_pending_bytes:
            behind = (
                f"{self._max_pending} events"
                if too_many
                else f"{self._max_pending_bytes // (1024 * 1024)} MiB"
            )
            self._pending.clear()
            self._pending_count = 0
            self._pending_bytes = 0
            self._error = WatchExpired(
                f"watch on {self.prefix!r} fell more than {behind} behind"
                " and was closed; list and watch again"
            )
            self._wake()
            return False
        self._pending.append(matching)
        self._pending_count += len(matching)
        self._pending_bytes += size
        self._wake()
        return True

    def end(self) -> None:
        """The datastore is closing: deliver what is queued, then stop."""
        self._closed = True
        self._wake()

    # Internals ------------------------------------------------------------------------------

    async def _replay_chunk(self) -> list[Event]:
        try:
            batch = await self._hub.replay(
                self.prefix, self._after, self._replay_upto, REPLAY_CHUNK
            )
        except BaseException:
            self.close()
            raise
        if len(batch) < REPLAY_CHUNK:
            self._after = self._replay_upto  # the source returned all there is up to upto
        elif batch:
            self._after = batch[-1].kv.mod_revision
        return batch

    def _take_pending(self) -> list[Event]:
        # Hand over everything queued at once: fewer wake-ups, and still in revision order.
        if len(self._pending) == 1:
            events = self._pending.popleft()
        else:
            events = [event for batch in self._pending for event in batch]
            self._pending.clear()
        self._pending_count = 0
        self._pending_bytes = 0
        # Live events at or below the start revision were already seen by the consumer (they
        # were committed before the watch was created but published after it registered).
        if events[0].kv.mod_revision <= self._after:
            events = [e for e in events if e.kv.mod_revision > self._after]
        if events:
            self._after = events[-1].kv.mod_revision
        return events

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class WatchHub:
    """Fans published events out to registered watchers. Used only on the event loop."""

    def __init__(self, replay: ReplaySource, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.replay = replay
        self.max_pending = max_pending
        self.published_revision = 0
        self._watchers: set[HubWatch] = set()

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def watch(self, prefix: str, after: int) -> HubWatch:
        """Register a watcher for events with revision > ``after``.

        Events up to the revision published now are replayed from the log; later ones arrive
        live. The caller has already checked ``after`` against the compact revision.
        """
        watcher = HubWatch(self, prefix, after, self.published_revision, self.max_pending)
        self._watchers.add(watcher)
        return watcher

    def publish(self, events: Sequence[Event]) -> None:
        """Deliver one committed batch (in revision order) to every matching watcher."""
        if not events:
            return
        self.published_revision = events[-1].kv.mod_revision
        cut_off = [w for w in self._watchers if not w.offer(events)]
        for watcher in cut_off:
            self._watchers.discard(watcher)

    def unregister(self, watcher: HubWatch) -> None:
        self._watchers.discard(watcher)

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.end()
        self._watchers.clear()
