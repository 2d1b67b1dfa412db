"""CronJob schedules read as Kubernetes reads them, and their next times in a time zone."""

from __future__ import annotations

import datetime

import pytest

from k3py.cluster.api import cron

UTC = datetime.UTC
START = datetime.datetime(2026, 12, 5, 0, 0, tzinfo=UTC)  # a Saturday


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("* * * * *", "2026-12-05T00:01:00+00:00"),
        ("*/15 * * * *", "2026-12-05T00:15:00+00:00"),
        ("@hourly", "2026-12-05T01:00:00+00:00"),
        ("@daily", "2026-12-06T00:00:00+00:00"),
        ("0 9 * * MON-FRI", "2026-12-07T09:00:00+00:00"),
        ("0 0 * * 7", "2026-12-06T00:00:00+00:00"),  # 7 is Sunday too
        ("0 0 29 2 *", "2028-02-29T00:00:00+00:00"),
        ("0 0 13 * FRI", "2026-12-11T00:00:00+00:00"),  # both day fields: either matches
        ("30 4 1,15 jan ?", "2027-01-01T04:30:00+00:00"),
    ],
)
def test_next_time(schedule: str, expected: str) -> None:
    assert cron.parse(schedule).next_after(START, UTC).isoformat() == expected


@pytest.mark.parametrize(
    "schedule", ["61 * * * *", "* * * *", "@often", "* * 0 * *", "*/0 * * * *", "a b c d e"]
)
def test_bad_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(cron.CronError):
        cron.parse(schedule)


def test_time_zones_and_a_skipped_wall_time() -> None:
    berlin = cron.time_zone("Europe/Berlin")
    found = cron.parse("0 9 * * *").next_after(START, berlin)
    assert found.astimezone(UTC).isoformat() == "2026-12-05T08:00:00+00:00"
    # 02:30 does not exist on the day clocks spring forward; the next one is a day later.
    spring = datetime.datetime(2027, 3, 27, 12, tzinfo=UTC)
    assert cron.parse("30 2 * * *").next_after(spring, berlin).day == 29
    with pytest.raises(cron.CronError):
        cron.time_zone("Mars/Olympus_Mons")


def test_most_recent_counts_missed_times_and_stays_fast() -> None:
    schedule = cron.parse("* * * * *")
    last, missed = schedule.most_recent(START - datetime.timedelta(days=365), START, UTC)
    assert last == START
    assert missed > cron.TOO_MANY_MISSED
    last, missed = schedule.most_recent(START - datetime.timedelta(minutes=3), START, UTC)
    assert (last, missed) == (START, 3)
