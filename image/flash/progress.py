"""Progress of long flash stages (writing, verifying) shown to a person or to a log.

On a terminal one status line is redrawn in place: stage, bytes done of total, percent, rate and
time left. Elsewhere (CI, pipes) a plain line is printed every few seconds and at the end of each
stage, so logs stay readable. Both take their clock as a parameter so tests control time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

from k3py.image.bmap import human_size

Clock = Callable[[], float]


class Progress(Protocol):
    """What the flash stages report: a stage with a byte total, advances, and its end
    (``ok=False`` when the stage failed)."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def finish(self, ok: bool = True) -> None: ...


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class _Meter:
    """Counts bytes of one stage and derives rate and time left."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.stage = ""
        self.total = 0
        self.done = 0
        self.started = 0.0

    def reset(self, stage: str, total: int) -> None:
        self.stage, self.total, self.done = stage, total, 0
        self.started = self._clock()

    def elapsed(self) -> float:
        return max(self._clock() - self.started, 1e-9)

    def rate(self) -> float:
        return self.done / self.elapsed()

    def status(self) -> str:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.rate()
        left = format_duration((self.total - self.done) / rate) if rate > 0 else "--:--"
        return (
            f"{self.stage} {human_size(self.done)} of {human_size(self.total)} ({percent:.0f}%), "
            f"{human_size(int(rate))}/s, ETA {left}"
        )

    def summary(self) -> str:
        return (
            f"{self.stage} done: {human_size(self.done)} in {self.elapsed():.1f} s "
            f"({human_size(int(self.rate()))}/s)"
        )


class _Throttled:
    """What both progress styles share: a meter, and a redraw at most every ``every`` s."""

    def __init__(self, stream: TextIO, clock: Clock, every: float) -> None:
        self._stream = stream
        self._clock = clock
        self._every = every
        self._meter = _Meter(clock)
        self._shown = 0.0

    def start(self, stage: str, total: int) -> None:
        self._meter.reset(stage, total)
        self._shown = self._clock()
        self._started(stage, total)

    def advance(self, count: int) -> None:
        self._meter.done += count
        if self._clock() - self._shown >= self._every:
            self._shown = self._clock()
            self._show(self._meter.status())

    def _started(self, stage: str, total: int) -> None:
        self._show(self._meter.status())

    def _show(self, status: str) -> None:
        raise NotImplementedError


class TerminalProgress(_Throttled):
    """One status line redrawn in place, at most a few times a second."""

    def __init__(self, stream: TextIO, clock: Clock = time.monotonic, every: float = 0.2) -> None:
        super().__init__(stream, clock, every)

    def finish(self, ok: bool = True) -> None:
        # A failed stage keeps its last status line, so the error below it has context.
        self._stream.write(f"\r\x1b[K{self._meter.summary()}\n" if ok else "\n")
        self._stream.flush()

    def _show(self, status: str) -> None:
        self._stream.write(f"\r\x1b[K{status}")
        self._stream.flush()


class LineProgress(_Throttled):
    """Plain lines for logs: one when a stage starts, every ``every`` seconds, and at its end."""

    def __init__(self, stream: TextIO, clock: Clock = time.monotonic, every: float = 5.0) -> None:
        super().__init__(stream, clock, every)

    def finish(self, ok: bool = True) -> None:
        if ok:
            self._show(self._meter.summary())

    def _started(self, stage: str, total: int) -> None:
        self._show(f"{stage} {human_size(total)}")

    def _show(self, status: str) -> None:
        self._stream.write(f"k3py flash: {status}\n")
        self._stream.flush()
