"""CronJob schedules: the five-field cron format as Kubernetes reads it, and its next times.

Kubernetes parses ``spec.schedule`` with robfig/cron's standard parser: minute, hour, day of
month, month, day of week; ``*``, ``?``, lists, ranges, steps (``*/15``, ``1-30/5``), month and
weekday names (``JAN``, ``mon``), weekday 0-6 from Sunday (7 is Sunday too, as cron allows),
and the descriptors ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/
``@midnight``, ``@hourly``. When both day fields are restricted a day matches either (cron's
rule); when one is ``*`` the other decides. Times are wall-clock times in the CronJob's
``spec.timeZone`` (an IANA name read through :mod:`zoneinfo`, UTC when unset); a wall time
that a daylight-saving change skips does not occur.

Hand-written: robfig's rules (the day-field rule, ``?``, descriptors) differ in details from
the Python cron libraries, and none is packaged for the boards' Debian.
"""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Looking further than this for a next time means the schedule never fires (Feb 30th).
_HORIZON_DAYS = 366 * 5
TOO_MANY_MISSED = 100


class CronError(ValueError):
    """A schedule or time zone that cannot be used; the message says which part."""


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day of month is "*"
    any_weekday: bool  # day of week is "*"

    def _day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday

    def next_after(self, after: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime:
        """The first scheduled time strictly after ``after`` (aware), as an aware datetime."""
        local = after.astimezone(zone).replace(second=0, microsecond=0, tzinfo=None)
        start = local + datetime.timedelta(minutes=1)
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        day = start.date()
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in hours:
                    if day == start.date() and hour < start.hour:
                        continue
                    for minute in minutes:
                        wall = datetime.datetime.combine(day, datetime.time(hour, minute))
                        if wall < start:
                            continue
                        found = wall.replace(tzinfo=zone)
                        # A wall time skipped by a clock change does not round-trip.
                        back = found.astimezone(datetime.UTC).astimezone(zone)
                        if back.replace(tzinfo=None) == wall and found > after:
                            return found
            day += datetime.timedelta(days=1)
        raise CronError("the schedule never fires")

    def most_recent(
        self, after: datetime.datetime, until: datetime.datetime, zone: datetime.tzinfo
    ) -> tuple[datetime.datetime | None, int]:
        """The last scheduled time in (``after``, ``until``] and how many fell in it
        (counted up to :data:`TOO_MANY_MISSED`, as the CronJob controller counts)."""
        last: datetime.datetime | None = None
        count = 0
        current = after
        while count <= TOO_MANY_MISSED:
            try:
                current = self.next_after(current, zone)
            except CronError:
                return last, count
            if current > until:
                return last, count
            last, count = current, count + 1
        # Many were missed: look for the latest in growing windows before ``until``.
        for days in (1, 8, 32, 367, _HORIZON_DAYS):
            current = max(after, until - datetime.timedelta(days=days))
            found: datetime.datetime | None = None
            while True:
                try:
                    current = self.next_after(current, zone)
                except CronError:
                    break
                if current > until:
                    break
                found = current
            if found is not None:
                return found, count
        return last, count


def _value(text: str, names: list[str], low: int) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + low
    if not text.isdigit():
        raise CronError(f"{text!r} is not a number")
    return int(text)


def _field(text: str, low: int, high: int, names: list[str], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{what}: bad step {step_text!r}")
            step = int(step_text)
        if body in ("*", "?"):
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _value(a, names, low), _value(b, names, low)
        else:
            first = _value(body, names, low)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise CronError(f"{what}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse(text: str) -> Schedule:
    """A ``spec.schedule``; raises :class:`CronError` with what is wrong."""
    spec = _DESCRIPTORS.get(text.strip().lower(), text.strip())
    if spec.startswith("@"):
        raise CronError(f"unrecognized descriptor: {spec}")
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {text}")
    minute, hour, day, month, weekday = fields
    return Schedule(
        minutes=_field(minute, 0, 59, [], "minute"),
        hours=_field(hour, 0, 23, [], "hour"),
        days=_field(day, 1, 31, [], "day of month"),
        months=_field(month, 1, 12, _MONTHS, "month"),
        # 7 is Sunday as well as 0.
        weekdays=frozenset(d % 7 for d in _field(weekday, 0, 7, _DAYS, "day of week")),
        any_day=day in ("*", "?"),
        any_weekday=weekday in ("*", "?"),
    )


def time_zone(name: str | None) -> datetime.tzinfo:
    """``spec.timeZone`` (an IANA name), UTC when unset; raises :class:`CronError`."""
    if not name:
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name}") from None
