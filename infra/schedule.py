"""EventBridge schedule expressions: their grammar, and the longest gap between two runs.

EventBridge refuses at deploy time what CDK and CloudFormation accept at synth, so the
grammar is checked here: ``rate(1 day)`` (singular for 1, plural otherwise, at least 1) or
``cron(minutes hours day-of-month month day-of-week year)``, six fields, with ``?`` in
exactly one of day-of-month and day-of-week. The longest gap between two scheduled runs
sizes the "no successful run" alarm: a weekday schedule waits 3 days over a weekend.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

EXAMPLES = "e.g. 'cron(0 2 * * ? *)' (every day, 02:00 UTC) or 'rate(1 day)'"
_UNITS = {"minute": 1, "hour": 60, "day": 1440}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]  # EventBridge: 1 = SUN ... 7 = SAT


class ScheduleError(ValueError):
    """An expression EventBridge would refuse; the message says why and shows one it takes."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    specials: str = ""  # the characters this field allows besides , - * /


_FIELDS = (
    _Field("minutes", 0, 59),
    _Field("hours", 0, 23),
    _Field("day-of-month", 1, 31, specials="?LW"),
    _Field("month", 1, 12, tuple(_MONTHS)),
    _Field("day-of-week", 1, 7, tuple(_DAYS), specials="?L#"),
    _Field("year", 1970, 2199),
)


def validate(expression: str) -> None:
    """Raise :class:`ScheduleError` unless EventBridge accepts ``expression``."""
    rate = re.fullmatch(r"rate\((\S+) (\S+)\)", expression)
    if rate:
        _validate_rate(rate.group(1), rate.group(2))
        return
    cron = re.fullmatch(r"cron\((.*)\)", expression)
    if not cron:
        raise ScheduleError(f"'{expression}' is neither cron(...) nor rate(...); {EXAMPLES}")
    fields = cron.group(1).split()
    if len(fields) != len(_FIELDS):
        raise ScheduleError(
            f"'{expression}' has {len(fields)} fields; EventBridge's cron has six "
            f"(minutes hours day-of-month month day-of-week year), {EXAMPLES}"
        )
    for field, text in zip(_FIELDS, fields, strict=True):
        _validate_field(field, text, expression)
    day_of_month, day_of_week = fields[2], fields[4]
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ScheduleError(
            f"'{expression}': exactly one of day-of-month and day-of-week must be '?'; {EXAMPLES}"
        )


def _validate_rate(value: str, unit: str) -> None:
    if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
        raise ScheduleError(
            f"rate({value} {unit}): the value must be a whole number >= 1; {EXAMPLES}"
        )
    expected = unit.removesuffix("s") if int(value) > 1 else unit
    if expected not in _UNITS or (int(value) == 1) == unit.endswith("s"):
        right = f"{value} {expected}{'s' if int(value) > 1 else ''}" if expected in _UNITS else ""
        hint = f"write 'rate({right})'" if right else "the unit is minute(s), hour(s) or day(s)"
        raise ScheduleError(f"rate({value} {unit}): {hint}; {EXAMPLES}")


def _validate_field(field: _Field, text: str, expression: str) -> None:
    if text in {"*", "?"} and (text == "*" or "?" in field.specials):
        return
    for part in text.split(","):
        if not _part_is_valid(field, part):
            raise ScheduleError(
                f"'{expression}': '{text}' is not a valid {field.name} "
                f"({field.low}-{field.high}{', names' if field.names else ''}); {EXAMPLES}"
            )


def _part_is_valid(field: _Field, part: str) -> bool:
    if "L" in field.specials and re.fullmatch(r"[0-9]*L|LW", part):
        number = part.removesuffix("L").removesuffix("W") or str(field.high)
        return part in {"L", "LW"} or field.low <= int(number) <= field.high
    if "W" in field.specials and re.fullmatch(r"[0-9]+W", part):
        return field.low <= int(part[:-1]) <= field.high
    if "#" in field.specials and re.fullmatch(r"[^#]+#[1-5]", part):
        return _value(field, part.split("#")[0]) is not None
    base, _, step = part.partition("/")
    if step and not (re.fullmatch(r"[0-9]+", step) and int(step) >= 1):
        return False
    if base == "*":
        return True
    low, _, high = base.partition("-")
    values = [_value(field, low)] + ([_value(field, high)] if high else [])
    return all(v is not None for v in values)


def _value(field: _Field, text: str) -> int | None:
    if text.upper() in field.names:
        return field.names.index(text.upper()) + field.low
    if re.fullmatch(r"[0-9]+", text) and field.low <= int(text) <= field.high:
        return int(text)
    return None


def longest_gap(expression: str, *, start: dt.datetime | None = None) -> dt.timedelta:
    """The longest time between two consecutive runs of ``expression`` over eight weeks
    (a schedule with L, W or # in its days is taken as monthly: 31 days)."""
    validate(expression)
    rate = re.fullmatch(r"rate\((\d+) (\w+?)s?\)", expression)
    if rate:
        return dt.timedelta(minutes=int(rate.group(1)) * _UNITS[rate.group(2)])
    fields = expression[5:-1].split()
    if any(c in fields[2] + fields[4] for c in "LW#"):
        return dt.timedelta(days=31)
    matches = [_matcher(field, text) for field, text in zip(_FIELDS, fields, strict=True)]
    moment = (start or dt.datetime(2026, 1, 5, tzinfo=dt.UTC)).replace(second=0, microsecond=0)
    runs: list[dt.datetime] = []
    for minute in range(8 * 7 * 24 * 60):
        t = moment + dt.timedelta(minutes=minute)
        dow = t.isoweekday() % 7 + 1  # EventBridge: SUN = 1
        values = (t.minute, t.hour, t.day, t.month, dow, t.year)
        if all(match(v) for match, v in zip(matches, values, strict=True)):
            runs.append(t)
    if len(runs) < 2:
        return dt.timedelta(weeks=8)
    return max(b - a for a, b in itertools.pairwise(runs))


def _matcher(field: _Field, text: str) -> Callable[[int], bool]:
    if text in {"*", "?"}:
        return lambda _: True
    allowed: set[int] = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        low, _, high = base.partition("-")
        first = field.low if base == "*" else _value(field, low)
        first = field.low if first is None else first
        last = field.high if base == "*" or (step and not high) else _value(field, high or low)
        allowed.update(range(first, (first if last is None else last) + 1, int(step or 1)))
    return allowed.__contains__
