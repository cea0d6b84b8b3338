"""A file with more dates than one run loads (max_dates_per_run): it loads over several
runs, oldest first, and an ordinary file arriving meanwhile is loaded by the first run that
sees it. The synthesized state machine, with max_dates_per_run 5."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runner.sample_data import write_stream_file
from tests.harness import SAMPLE_CONFIG, Harness, assert_matches_reference, running_harness
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e


@pytest.fixture
def harness(capped_pipeline, new_database, tmp_path, retry_sleeps) -> Iterator[Harness]:
    with running_harness(capped_pipeline, new_database, tmp_path) as h:
        yield h


def odd_file(folder: Path, sample) -> Path:
    """One play on each of 12 dates a month apart, the oldest in 2001: a file no day
    delivers, each row valid."""
    lines = sample.users_csv.read_text().splitlines()
    user = lines[1].split(",")[0]
    track = sample.songs_csv.read_text().splitlines()[1].split(",")[1]
    days = [dt.date(2001, 1, 1) + dt.timedelta(days=31 * n) for n in range(12)]
    path = folder / "streams_odd.csv"
    path.write_text(
        "user_id,track_id,listen_time\n" + "".join(f"{user},{track},{d} 12:00:00\n" for d in days)
    )
    return path


def test_a_backlog_of_dates_loads_over_runs_and_a_new_day_goes_first(harness, sample, tmp_path):
    harness.load_source(sample.users_csv, sample.songs_csv)
    odd = odd_file(tmp_path, sample)
    day = write_stream_file(
        tmp_path / "streams_day.csv",
        config=SAMPLE_CONFIG,
        day=SAMPLE_CONFIG.start_date,
        plays=200,
        seed=51,
    )
    harness.put_streams(odd, day)

    first = harness.run("first")

    dates = first.output["kpi_dates"]
    assert len(dates) == 5
    assert str(SAMPLE_CONFIG.start_date) in dates  # the day's file is loaded at once
    assert harness.keys(harness.data_bucket, "ledger/pending/")  # the odd file waits
    late = write_stream_file(
        tmp_path / "streams_late.csv",
        config=SAMPLE_CONFIG,
        day=SAMPLE_CONFIG.start_date + dt.timedelta(days=1),
        plays=100,
        seed=52,
    )
    harness.put_streams(late)
    second = harness.run("second")
    assert str(SAMPLE_CONFIG.start_date + dt.timedelta(days=1)) in second.output["kpi_dates"]
    runs = [first, second]
    while harness.keys(harness.data_bucket, "ledger/pending/"):
        runs.append(harness.run(f"catch-up-{len(runs)}"))
        assert len(runs) < 8, "the backlog never ends"
        assert len(runs[-1].output["kpi_dates"]) <= 5

    assert harness.run("after").output["status"] == "no_new_files"
    reference = compute_reference(sample.users_csv, sample.songs_csv, [odd, day, late])
    assert_matches_reference(harness.warehouse(), reference)
