"""EventBridge schedules: the longest gap between runs, which sizes the missed-run alarm."""

from __future__ import annotations

import datetime as dt

import pytest

from infra.schedule import longest_gap


@pytest.mark.parametrize(
    ("expression", "hours"),
    [
        ("cron(0 2 * * ? *)", 24),  # daily
        ("cron(0 6 ? * MON-FRI *)", 72),  # weekdays: Friday to Monday
        ("cron(0 6 ? * 2-6 *)", 72),  # the same by number (1 = Sunday)
        ("cron(0 */6 * * ? *)", 6),
        ("cron(0/15 * * * ? *)", 0.25),
        ("cron(30 1 1,15 * ? *)", 17 * 24),  # the 15th to the 1st of a 31-day month
        ("cron(0 8 L * ? *)", 31 * 24),  # L: taken as monthly
        ("rate(1 day)", 24),
        ("rate(12 hours)", 12),
        ("rate(5 minutes)", 5 / 60),
    ],
)
def test_the_longest_gap_between_two_runs(expression, hours):
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday
    assert longest_gap(expression, start=start) == dt.timedelta(hours=hours)
