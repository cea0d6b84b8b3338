"""The load plan's pending markers (kpi_pipeline.planning), against moto's S3."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.planning import make_plan
from kpi_pipeline.storage import Storage

BUCKET = "data"
WITHIN = dt.timedelta(minutes=16)


def ledger_with(aws: Any, entries: dict[str, dict[str, Any] | None]) -> Ledger:
    aws.s3.create_bucket(Bucket=BUCKET)
    layout = Layout(BUCKET, "landing", "landing/")
    for content, entry in entries.items():
        aws.s3.put_object(Bucket=BUCKET, Key=layout.pending_key(content), Body=b"{}")
        if entry is not None:
            aws.s3.put_object(
                Bucket=BUCKET, Key=layout.ledger_key(content), Body=json.dumps(entry).encode()
            )
    return Ledger(Storage(aws.s3), layout)


def test_a_marker_without_an_entry_is_cleared_only_once_no_writer_can_still_add_it(aws):
    """Issue 17, item 1: a run's PlanTransform once cleared the marker of an ingest still at
    work (a run that failed meanwhile), which wrote its ledger entry a moment later: that
    content was accepted and never loaded. A marker is orphaned only once older than the
    longest a writer runs."""
    ledger = ledger_with(aws, {"young": None, "no-plays": {"kpi_dates": []}})
    now = dt.datetime.now(dt.UTC)

    assert make_plan(ledger, writers_end_within=WITHIN, now=now).unloadable == ["no-plays"]
    later = now + WITHIN + dt.timedelta(seconds=1)
    assert make_plan(ledger, writers_end_within=WITHIN, now=later).unloadable == [
        "no-plays",
        "young",
    ]


def test_a_file_of_ten_thousand_dates_loads_a_share_per_run_and_never_delays_a_day(aws):
    """Issue 17, item 5: one file of 7,200 dates (any year 1-9999 is valid) made every
    later load fail; it now loads max_dates per run, oldest first, and an ordinary file is
    loaded by the first run that sees it."""
    first = dt.date(1, 1, 1)
    odd = [(first + dt.timedelta(days=n)).isoformat() for n in range(10_000)]
    ledger = ledger_with(
        aws,
        {
            "odd": {"kpi_dates": odd, "loaded_dates": odd[:30]},  # 30 loaded by a run before
            "today": {"kpi_dates": ["2026-12-05"]},
        },
    )
    for content, dates in (("odd", odd), ("today", ["2026-12-05"])):
        for day in dates[:80] + dates[-1:]:  # curated objects of the dates it may plan
            aws.s3.put_object(
                Bucket=BUCKET, Key=f"curated/plays/kpi_date={day}/{content}.parquet", Body=b"x"
            )

    planned = make_plan(ledger, max_dates=50).plan

    assert len(planned.kpi_dates) == 50
    assert planned.kpi_dates[-1] == dt.date(2026, 12, 5)  # the day's file first
    assert [d.isoformat() for d in planned.kpi_dates[:49]] == odd[30:79]  # then the oldest
    assert planned.pending == ["today"]  # its marker goes; the odd file's stays
    assert [d.isoformat() for d in planned.partial["odd"]] == odd[30:79]


def test_a_backlog_of_one_date_files_never_crowds_out_the_newest_file(aws):
    """Review of issue 17: with more one-date contents than the cap, ties went by content
    key (a hash), so an old backlog of one-date files could push today's file out for
    several runs. Among as few dates, the content marked last goes first."""
    backlog = {f"old-{n:02d}": {"kpi_dates": [f"2001-01-{n + 1:02d}"]} for n in range(20)}
    ledger = ledger_with(aws, backlog)
    time.sleep(1.1)  # S3's LastModified is to the second
    ledger_with(aws, {"0-today": {"kpi_dates": ["2026-12-05"]}})  # sorts first by key, too
    ledger = ledger_with(aws, {"zz-today": {"kpi_dates": ["2026-12-06"]}})

    planned = make_plan(ledger, max_dates=5).plan

    assert dt.date(2026, 12, 6) in planned.kpi_dates
    assert dt.date(2026, 12, 5) in planned.kpi_dates
    assert "zz-today" in planned.pending
