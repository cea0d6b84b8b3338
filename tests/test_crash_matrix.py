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
from tests.harness import SAMPLE_CONFIG, Harness, assert_matches_reference, stage_rows
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
    # Load's commit again, with warehouse dates in it: a load run again after its commit
    # must take the same stage batches (it once emptied those dates).
    SideEffect("Load", "commit", "warehouse dates"),
)
# What a replay of the quarantine writes before its dates are planned like a daily run's:
# the rows of a date never pinned (every row of it named a user who arrived late) are
# accepted, so the date is pinned first, as an ingest would.
REPLAY_CRASH_POINTS: tuple[SideEffect, ...] = (
    SideEffect("ReplayQuarantine", "copy", "pinned snapshot"),
    SideEffect("ReplayQuarantine", "put", "date pin"),
    SideEffect("ReplayQuarantine", "put", "curated plays"),
    SideEffect("ReplayQuarantine", "put", "pending marker"),
    SideEffect("ReplayQuarantine", "put", "ledger entry"),
    SideEffect("ReplayQuarantine", "put", "replay result"),
)
REPLAY = {"replay_quarantine": {"reasons": ["unknown_user_id"]}}
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
    reference = compute_reference(sample.users_csv, sample.songs_csv, [files["good"]])
    assert_matches_reference(auto_harness.warehouse(), reference)


@pytest.mark.parametrize("every_time", [False, True], ids=["once", "every-attempt"])
@pytest.mark.parametrize("point", WAREHOUSE_CRASH_POINTS, ids=str)
def test_a_crash_in_the_warehouse_engine_loses_and_invents_nothing(
    auto_harness, sample, files, point, every_time
):
    """A date computed again adds a batch of its own; the load takes one, keeps it (a load
    run again takes it again) and clears the rest."""
    crash_and_catch_up(auto_harness, sample, files, point, every_time)
    kept = [(kpi_date, attempt) for kpi_date, attempt, _ in stage_rows(auto_harness.warehouse_dsn)]
    assert len({d for d, _ in kept}) == len(kept), f"a date with two batches left: {kept}"


def outcome(execution) -> str:
    if execution.status == "SUCCEEDED":
        return str(execution.output["status"])
    return f"failed in {execution.failed_state} ({execution.error})"


def crash_and_catch_up(harness: Harness, sample, files, point: SideEffect, every_time: bool):
    effects = harness.local.side_effects
    effects.crash_after, effects.crash_every_time = point, every_time
    first = first_run(harness, sample, files)
    assert effects.crashes, f"{point} never happened"
    effects.disarm()
    if first.status == "SUCCEEDED":  # the retry went on: the warehouse is right already
        reference = compute_reference(sample.users_csv, sample.songs_csv, [files["good"]])
        assert_matches_reference(harness.warehouse(), reference)
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
    MATRIX[f"{point} [{'every attempt' if every_time else 'once'}]"] = (
        f"{effects.crashes} crash(es); run 1 {outcome(first)}; next run "
        f"{second.output['status']}; warehouse = reference, nothing pending, no file lost"
    )


@pytest.fixture(scope="module")
def late_users(tmp_path_factory, sample) -> tuple[Path, Path]:
    """A file whose every row names a user the source lacks (its date is never pinned), and
    the users table once those users arrived."""
    folder = tmp_path_factory.mktemp("late-users")
    day = SAMPLE_CONFIG.start_date + dt.timedelta(days=7)
    track = sample.songs_csv.read_text().splitlines()[1].split(",")[1]
    late = folder / "streams_late_users.csv"
    late.write_text(
        "user_id,track_id,listen_time\n"
        + "".join(f"{9000 + n},{track},{day} 1{n}:00:00\n" for n in range(4))
        + f"9000,{track},{day} 10:00:00\n"  # a repeat of the first play
    )
    users = folder / "users.csv"
    lines = sample.users_csv.read_text().splitlines()
    first = lines[1].split(",")
    users.write_text(
        "\n".join([*lines, *(",".join([str(9000 + n), *first[1:]]) for n in range(4))]) + "\n"
    )
    return late, users


def replay_after_a_day(harness: Harness, sample, files, late_users) -> object:
    late, users = late_users
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(files["good"], late)
    day_1 = harness.run("day-1")
    assert day_1.output["rows_quarantined"]["unknown_user_id"] >= 5
    harness.load_source(users, sample.songs_csv)
    return harness.run("replay-1", REPLAY)


def test_the_replays_crash_points_are_what_it_writes(harness, sample, files, late_users):
    execution = replay_after_a_day(harness, sample, files, late_users)
    assert execution.output["replay"]["rows_accepted"] == {"unknown_user_id": 5}
    seen = {e for e in harness.local.side_effects.distinct() if e.step == "ReplayQuarantine"}
    assert sorted(seen) == sorted(REPLAY_CRASH_POINTS)


@pytest.mark.parametrize("every_time", [False, True], ids=["once", "every-attempt"])
@pytest.mark.parametrize("point", REPLAY_CRASH_POINTS, ids=str)
def test_a_crash_in_a_replay_loses_and_counts_nothing_twice(
    harness, sample, files, late_users, point, every_time
):
    """Once: the retry accepts the same rows under the same key. Every attempt: the replay
    fails, and the next replay (or daily run) accepts each row once."""
    effects = harness.local.side_effects
    effects.crash_after, effects.crash_every_time = point, every_time
    first = replay_after_a_day(harness, sample, files, late_users)
    assert effects.crashes, f"{point} never happened"
    effects.disarm()
    second = harness.run("replay-2", REPLAY)
    assert second.status == "SUCCEEDED", second.cause

    late, users = late_users
    reference = compute_reference(users, sample.songs_csv, [files["good"], late])
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == [], "markers left"
    entries = [
        harness.local.read_json(harness.data_bucket, key)
        for key in harness.keys(harness.data_bucket, "ledger/files/")
        if "-replay-" in key
    ]
    accepted = [(e["replay_of"], n) for e in entries for n in e["replayed_rows"]]
    assert len(accepted) == len(set(accepted)) == 5, "a row accepted twice, or lost"
    # What the summaries say adds up too: a retry counts what its dead attempt accepted, and
    # the next replay what a failed one did.
    if first.status == "SUCCEEDED":
        assert first.output["replay"]["rows_accepted"] == {"unknown_user_id": 5}
    replay_2 = second.output["replay"]
    assert sum(replay_2["rows_accepted"].values()) + replay_2["rows_replayed_before"] == 5
    MATRIX[f"{point} [{'every attempt' if every_time else 'once'}]"] = (
        f"{effects.crashes} crash(es); replay 1 {outcome(first)}; next replay "
        f"{second.output['status']}; warehouse = reference, each row accepted once"
    )


# What a revalidation writes before its dates are planned like a daily run's: per curated
# object with plays invalid now, their quarantined rows, the marker and entry of the new
# content that holds them, then the object without them.
REVALIDATE_CRASH_POINTS: tuple[SideEffect, ...] = (
    SideEffect("ReplayQuarantine", "put", "quarantined rows"),
    SideEffect("ReplayQuarantine", "put", "pending marker"),
    SideEffect("ReplayQuarantine", "put", "ledger entry"),
    SideEffect("ReplayQuarantine", "put", "curated plays"),
    SideEffect("ReplayQuarantine", "put", "revalidation result"),
)
REVALIDATE = {"revalidate": {"from": "2024-01-01", "to": "2024-12-31"}}
REPIN = {"recompute": {**REVALIDATE["revalidate"], "catalogue": "current"}}


def revalidate_after_a_delete(harness: Harness, sample, files, late_users) -> object:
    """Day 1 accepts the plays of four users; they are deleted from the source, their dates
    re-pinned to today's tables; then the revalidation."""
    late, users = late_users
    harness.load_source(users, sample.songs_csv)
    harness.put_streams(files["good"], late)
    assert harness.run("day-1").output["status"] == "loaded"
    harness.load_source(sample.users_csv, sample.songs_csv)
    assert harness.run("repin", REPIN).output["status"] == "recomputed"
    return harness.run("revalidate-1", REVALIDATE)


def test_the_revalidations_crash_points_are_what_it_writes(harness, sample, files, late_users):
    execution = revalidate_after_a_delete(harness, sample, files, late_users)
    assert execution.output["revalidation"]["plays_quarantined"] == {"unknown_user_id": 4}
    seen = {e for e in harness.local.side_effects.distinct() if e.step == "ReplayQuarantine"}
    assert sorted(seen) == sorted(REVALIDATE_CRASH_POINTS)


@pytest.mark.parametrize("every_time", [False, True], ids=["once", "every-attempt"])
@pytest.mark.parametrize("point", REVALIDATE_CRASH_POINTS, ids=str)
def test_a_crash_in_a_revalidation_moves_each_play_once(
    harness, sample, files, late_users, point, every_time
):
    """Once: the retry moves the same plays under the same keys. Every attempt: the
    revalidation fails, and the next one moves each play once; no date is left stale."""
    effects = harness.local.side_effects
    effects.crash_after, effects.crash_every_time = point, every_time
    first = revalidate_after_a_delete(harness, sample, files, late_users)
    assert effects.crashes, f"{point} never happened"
    effects.disarm()
    second = harness.run("revalidate-2", REVALIDATE)
    assert second.status == "SUCCEEDED", second.cause

    late, _ = late_users
    reference = compute_reference(sample.users_csv, sample.songs_csv, [files["good"], late])
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == [], "markers left"
    entries = [
        harness.local.read_json(harness.data_bucket, key)
        for key in harness.keys(harness.data_bucket, "ledger/files/")
        if "-revalidated-" in key
    ]
    assert sum(sum(e["rows_quarantined"].values()) for e in entries) == 4, "moved twice or lost"
    if first.status == "SUCCEEDED":
        assert first.output["revalidation"]["plays_quarantined"] == {"unknown_user_id": 4}
    result = second.output["revalidation"]
    assert sum(result["plays_quarantined"].values()) + result["plays_quarantined_before"] == 4
    MATRIX[f"{point} (revalidate) [{'every attempt' if every_time else 'once'}]"] = (
        f"{effects.crashes} crash(es); revalidation 1 {outcome(first)}; next one "
        f"{second.output['status']}; warehouse = reference, each play moved once"
    )


def test_a_revalidation_left_half_way_then_run_after_a_further_correction_moves_each_play_once(
    harness, sample, files, late_users, tmp_path, monkeypatch
):
    """Review of issue 19: a revalidation stopped after the moved content's ledger entry
    (its curated object never rewritten); another user is deleted; the next revalidation
    finds the first plays again beside the new one. It must move each play once: the move
    is keyed by the curated object as it is, so the unfinished one is redone, not doubled."""
    late, users = late_users
    harness.load_source(users, sample.songs_csv)
    harness.put_streams(files["good"], late)
    assert harness.run("day-1").output["status"] == "loaded"

    def without(gone: set[str]) -> Path:
        lines = users.read_text().splitlines()
        out = tmp_path / f"users-without-{len(gone)}.csv"
        out.write_text("\n".join(x for x in lines if x.split(",")[0] not in gone) + "\n")
        return out

    harness.load_source(without({"9000", "9001"}), sample.songs_csv)
    assert harness.run("repin", REPIN).output["status"] == "recomputed"
    from kpi_pipeline.storage import Storage

    upload = Storage.upload_file

    def refused(self, path, bucket, key, *args, **kwargs):  # S3 refuses the rewrite
        if key.startswith("curated/"):
            raise RuntimeError("AccessDenied")
        return upload(self, path, bucket, key, *args, **kwargs)

    monkeypatch.setattr(Storage, "upload_file", refused)
    assert harness.run("revalidate-1", REVALIDATE).status == "FAILED"
    monkeypatch.setattr(Storage, "upload_file", upload)
    harness.load_source(without({"9000", "9001", "9002"}), sample.songs_csv)
    assert harness.run("repin-2", REPIN).output["status"] == "recomputed"

    second = harness.run("revalidate-2", REVALIDATE)

    assert second.status == "SUCCEEDED", second.cause
    entries = [
        harness.local.read_json(harness.data_bucket, key)
        for key in harness.keys(harness.data_bucket, "ledger/files/")
        if "-revalidated-" in key
    ]
    assert sum(sum(e["rows_quarantined"].values()) for e in entries) == 3, "a play moved twice"
    assert second.output["revalidation"]["plays_quarantined"] == {"unknown_user_id": 3}
    reference = compute_reference(without({"9000", "9001", "9002"}), sample.songs_csv,
                                  [files["good"], late])  # fmt: skip
    assert_matches_reference(harness.warehouse(), reference)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == []
