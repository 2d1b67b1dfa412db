"""Kubernetes' restart back-off: 10 s, doubling to 5 min, forgotten after 10 quiet minutes.

The kubelet keys back-off by pod and container and measures it from the moment the container
last finished: the first failure restarts at once, the next ones wait 10 s, 20 s, 40 s … up to
300 s (``CrashLoopBackOff``). An entry not touched for twice the maximum is forgotten, so a
container that ran well for a while starts over from 10 s. Image pulls use the same rules
(``ImagePullBackOff``). Times are the clock's monotonic seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL = 10.0
MAXIMUM = 300.0


@dataclass
class _Entry:
    delay: float
    last_update: float


class Backoff:
    def __init__(self, initial: float = INITIAL, maximum: float = MAXIMUM) -> None:
        self.initial = initial
        self.maximum = maximum
        self._entries: dict[str, _Entry] = {}

    def _expired(self, entry: _Entry, event_time: float) -> bool:
        return event_time - entry.last_update > 2 * self.maximum

    def remaining(self, key: str, since: float, now: float) -> float:
        """Seconds still to wait before retrying after a failure at ``since`` (0: go)."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, since):
            return 0.0
        return max(0.0, since + entry.delay - now)

    def delay(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry.delay if entry else 0.0

    def next(self, key: str, event_time: float) -> None:
        """Record a retry after a failure at ``event_time``; the next wait doubles."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, event_time):
            self._entries[key] = _Entry(self.initial, event_time)
        else:
            entry.delay = min(entry.delay * 2, self.maximum)
            entry.last_update = event_time

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def collect(self, now: float) -> None:
        """Drop entries that can no longer apply."""
        for key in [k for k, e in self._entries.items() if self._expired(e, now)]:
            del self._entries[key]
