"""Progress shown while flashing: a redrawn line on terminals, periodic plain lines in logs."""

from __future__ import annotations

import io

from k3py.image.flash.progress import LineProgress, TerminalProgress, format_duration

MIB = 1 << 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_are_periodic_with_rate_and_eta() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = LineProgress(out, clock, every=5.0)

    progress.start("writing", 100 * MIB)
    for _ in range(10):  # 10 MiB a second for 10 seconds
        clock.now += 1
        progress.advance(10 * MIB)
    progress.finish()

    assert out.getvalue().splitlines() == [
        "k3py flash: writing 100.0 MiB",
        "k3py flash: writing 50.0 MiB of 100.0 MiB (50%), 10.0 MiB/s, ETA 0:05",
        "k3py flash: writing 100.0 MiB of 100.0 MiB (100%), 10.0 MiB/s, ETA 0:00",
        "k3py flash: writing done: 100.0 MiB in 10.0 s (10.0 MiB/s)",
    ]


def test_terminal_line_is_redrawn_in_place() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = TerminalProgress(out, clock, every=0.2)

    progress.start("verifying", 4 * MIB)
    clock.now += 0.1
    progress.advance(MIB)  # too soon to redraw
    clock.now += 0.3
    progress.advance(MIB)
    progress.finish()

    text = out.getvalue()
    assert "\n" not in text[:-1]
    assert text.count("\r\x1b[K") == 3
    assert "verifying 2.0 MiB of 4.0 MiB (50%), 5.0 MiB/s, ETA 0:00" in text
    assert text.endswith("verifying done: 2.0 MiB in 0.4 s (5.0 MiB/s)\n")


def test_failed_stage_keeps_its_last_line() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = TerminalProgress(out, clock)

    progress.start("writing", MIB)
    progress.finish(ok=False)

    assert out.getvalue().endswith("writing 0 bytes of 1.0 MiB (0%), 0 bytes/s, ETA --:--\n")


def test_durations() -> None:
    assert format_duration(0) == "0:00"
    assert format_duration(75.4) == "1:15"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
