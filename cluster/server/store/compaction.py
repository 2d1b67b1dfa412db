"""When to compact: the retention rule and the background loop that applies it.

The datastore keeps at least ``min_revisions`` revisions and at least ``min_age_seconds`` of
history, whichever keeps more, so a watcher or a paginated list that is a few minutes behind
can still continue. Rows carry no timestamps; instead the tracker samples the current revision
over time, and a revision counts as old once a sample at or after it is older than the horizon.
After a restart there are no old samples, so nothing is compacted for the first
``min_age_seconds``: the rule errs on keeping more.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history to keep and how often to compact (Kubernetes clients expect minutes)."""

    min_revisions: int = 1000
    min_age_seconds: float = 300.0
    interval_seconds: float = 60.0


class RetentionTracker:
    """Samples (time, revision) and answers "up to which revision may we compact now?"."""

    def __init__(self, retention: Retention, clock: Clock) -> None:
        self._retention = retention
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, revision: int, now: float | None = None) -> None:
        if now is None:
            now = self._clock()
        if self._samples and self._samples[-1][1] == revision:
            return  # nothing was written since: the older sample already covers this revision
        self._samples.append((now, revision))
        self._prune(now)

    def target(self, current_revision: int) -> int:
        """The newest revision that both retention bounds allow to compact (0: none)."""
        now = self._clock()
        self.record(current_revision, now)
        by_count = current_revision - self._retention.min_revisions
        by_age = 0
        horizon = now - self._retention.min_age_seconds
        for sampled_at, revision in self._samples:
            if sampled_at > horizon:
                break
            # Every revision up to this sample was written before sampled_at, so it is old.
            by_age = revision
        return max(0, min(by_count, by_age))

    def _prune(self, now: float) -> None:
        # Keep the newest sample beyond the horizon (it is the one target() uses) and newer ones.
        horizon = now - self._retention.min_age_seconds
        while len(self._samples) >= 2 and self._samples[1][0] <= horizon:
            self._samples.popleft()


async def run_compaction_loop(compact: Callable[[], Awaitable[int]], interval: float) -> None:
    """Compact every ``interval`` seconds until cancelled; a failed round is logged, not fatal."""
    while True:
        await asyncio.sleep(interval)
        try:
            revision = await compact()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("datastore compaction failed; retrying at the next interval")
        else:
            logger.debug("datastore compacted", extra={"fields": {"revision": revision}})
