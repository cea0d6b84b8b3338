"""The load plan's pending markers (kpi_pipeline.planning), against moto's S3."""

from __future__ import annotations

import datetime as dt
import json
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
