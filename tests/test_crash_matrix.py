"""The crash matrix: every step dies right after each side effect it has, as a Lambda that
times out part-way would; then the retries, and when the run fails the next daily run, go on.

After each crash: the warehouse holds exactly the reference KPIs of every accepted play
(none counted twice); every landing file is in landing, archive or quarantine; the pending
markers are exactly the accepted contents the warehouse lacks. The points come from one
list, :data:`CRASH_POINTS`; a guard test fails when the pipeline gains a side effect that the
list lacks (or loses one it has). The matrix (point -> outcome) is printed at the end.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from local_runner.faults import SideEffect
from local_runner.sample_data import write_stream_file
from tests.harness import SAMPLE_CONFIG, Harness, assert_matches_reference, stage_tables
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e

# Every side effect of the scenario's first run, in order of first occurrence.
CRASH_POINTS: tuple[SideEffect, ...] = (
    SideEffect("ExtractRds", "put", "source snapshot"),
    SideEffect("ListFiles", "put", "manifest file list"),
    SideEffect("ListFiles", "put", "manifest"),
    SideEffect("IngestFile", "put", "ingest result"),
    SideEffect("IngestFile", "copy", "pinned snapshot"),
    SideEffect("IngestFile", "put", "date pin"),
    SideEffect("IngestFile", "put", "curated plays"),
    SideEffect("IngestFile", "put", "quarantined rows"),
    SideEffect("IngestFile", "put", "pending marker"),
    SideEffect("IngestFile", "put", "ledger entry"),
    SideEffect("PlanTransform", "put", "load plan"),
    SideEffect("PlanTransform", "put", "date list"),
    SideEffect("Transform", "put", "KPI part"),
    SideEffect("Transform", "put", "date result"),
    SideEffect("Load", "commit", "warehouse dates"),
    SideEffect("Load", "put", "ledger entry"),
    SideEffect("Load", "delete", "pending marker"),
    SideEffect("Archive", "copy", "archived file"),
    SideEffect("Archive", "delete", "landing file"),
    SideEffect("Archive", "copy", "quarantined file"),
    SideEffect("Archive", "put", "quarantine reason"),
    SideEffect("Archive", "put", "source mark"),
    SideEffect("Archive", "put", "run summary"),
)
# What a run whose dates the warehouse engine computes writes besides (transform.engine
# "auto": the scenario's full days go to the warehouse, its late play to DuckDB).
WAREHOUSE_CRASH_POINTS: tuple[SideEffect, ...] = (
    SideEffect("TransformInWarehouse", "put", "COPY manifest"),
    SideEffect("TransformInWarehouse", "commit", "date stage table"),
    SideEffect("TransformInWarehouse", "put", "date result"),
)
MATRIX: dict[str, str] = {}  # printed by conftest's terminal summary


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample) -> dict[str, Path]:
    """Two days of plays (with bad rows and a late one), the same content again under
    another name, a file without a required column, and the next day's file."""
    folder = tmp_path_factory.mktemp("crash-files")
    day = SAMPLE_CONFIG.start_date
    good = write_stream_file(
        folder / "streams_a.csv", config=SAMPLE_CONFIG, day=day, plays=300, seed=31
    )
    again = folder / "streams_a_again.csv"
    again.write_bytes(good.read_bytes())
    bad = folder / "streams_bad.csv"
    bad.write_text("user_id,track_id,played_at\n1,x,2024-06-25 10:00:00\n")
    next_day = write_stream_file(
        folder / "streams_next.csv",
        config=SAMPLE_CONFIG,
        day=day + dt.timedelta(days=1),
        plays=200,
        seed=32,
    )
    return {"good": good, "again": again, "bad": bad, "next_day": next_day}


def first_run(harness: Harness, sample, files) -> object:
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(files["good"], files["again"], files["bad"])
    return harness.run("day-1")


def test_the_crash_points_are_every_side_effect_of_a_run(harness, sample, files):
    """The guard: the list above is what a run really writes, step by step."""
    execution = first_run(harness, sample, files)
    assert execution.output["status"] == "loaded"
    seen = harness.local.side_effects.distinct()
    assert sorted(set(seen)) == sorted(CRASH_POINTS), "\n".join(map(str, seen))


@pytest.mark.parametrize("every_time", [False, True], ids=["once", "every-attempt"])
@pytest.mark.parametrize("point", CRASH_POINTS, ids=str)
def test_a_crash_right_after_a_side_effect_loses_and_invents_nothing(
    harness, sample, files, point, every_time
):
    """Once: the retry of the step goes on. Every attempt: the run fails (or, in the ingest
    Map, the file is recorded as failed), and the next daily run catches up."""
    crash_and_catch_up(harness, sample, files, point, every_time)


def test_the_warehouse_engines_crash_points_are_what_it_writes_besides(auto_harness, sample, files):
    execution = first_run(auto_harness, sample, files)
    assert execution.output["status"] == "loaded"
    assert execution.output["kpi_dates_in_warehouse"] == 1
    seen = auto_harness.local.side_effects.distinct()
    assert sorted(set(seen)) == sorted({*CRASH_POINTS, *WAREHOUSE_CRASH_POINTS})


@pytest.mark.parametrize("every_time", [False, True], ids=["once", "every-attempt"])
@pytest.mark.parametrize("point", WAREHOUSE_CRASH_POINTS, ids=str)
def test_a_crash_in_the_warehouse_engine_loses_and_invents_nothing(
    auto_harness, sample, files, point, every_time
):
    """A date computed again replaces its stage table; the load drops every one it took."""
    crash_and_catch_up(auto_harness, sample, files, point, every_time)
    assert stage_tables(auto_harness.warehouse_dsn) == []


def crash_and_catch_up(harness: Harness, sample, files, point: SideEffect, every_time: bool):
    effects = harness.local.side_effects
    effects.crash_after, effects.crash_every_time = point, every_time
    first = first_run(harness, sample, files)
    assert effects.crashes, f"{point} never happened"
    effects.disarm()
    harness.put_streams(files["next_day"])
    second = harness.run("day-2")

    accepted = [files["good"], files["next_day"]]
    reference = compute_reference(sample.users_csv, sample.songs_csv, accepted)
    assert_matches_reference(harness.warehouse(), reference)
    landing_bucket, prefix = harness.landing
    everywhere = (
        harness.keys(landing_bucket, prefix)
        + harness.keys(harness.data_bucket, "archive/")
        + harness.keys(harness.data_bucket, "quarantine/files/")
    )
    for path in files.values():
        assert any(key.endswith("/" + path.name) for key in everywhere), path.name
    assert harness.keys(harness.data_bucket, "ledger/pending/") == [], "markers left"
    assert second.status == "SUCCEEDED", second.cause
    first_outcome = (
        first.output["status"]
        if first.status == "SUCCEEDED"
        else (f"failed in {first.failed_state} ({first.error})")
    )
    MATRIX[f"{point} [{'every attempt' if every_time else 'once'}]"] = (
        f"{effects.crashes} crash(es); run 1 {first_outcome}; next run "
        f"{second.output['status']}; warehouse = reference, nothing pending, no file lost"
    )
