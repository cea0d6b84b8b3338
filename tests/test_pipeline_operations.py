"""An operator's requests, run by the synthesized state machine: recompute a range of dates,
replay the quarantine (kpi_pipeline.requests, transform_plan, replay).

Each is checked against the reference KPIs, repeated to show nothing is counted twice, and
started while another run holds the lock; a bad request is refused before anything is
touched.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from local_runner.faults import SideEffect
from tests.harness import SAMPLE_CONFIG, Harness, assert_matches_reference
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e

DAY = SAMPLE_CONFIG.start_date
LAST_DAY = DAY + dt.timedelta(days=SAMPLE_CONFIG.days - 1)
EVERY_DAY = {"from": (DAY - dt.timedelta(days=1)).isoformat(), "to": LAST_DAY.isoformat()}


def recompute(catalogue: str = "pinned", **dates: str) -> dict[str, Any]:
    return {"recompute": {**EVERY_DAY, **dates, "catalogue": catalogue}}


REPLAY = {"replay_quarantine": {"reasons": ["unknown_user_id", "unknown_track_id"]}}


def corrected_songs(songs_csv: Path, out: Path) -> Path:
    """The songs table after a correction: every popularity halved, names and durations
    changed (no track added or removed: the same plays stay valid)."""
    rows = list(csv.DictReader(songs_csv.open(newline="")))
    for row in rows:
        row["popularity"] = str(int(row["popularity"]) // 2)
        row["duration_ms"] = str(int(row["duration_ms"]) + 1000)
        row["track_name"] = f"{row['track_name']} (remastered)"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def stream_user_ids(files: list[Path]) -> set[str]:
    ids = set()
    for path in files:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if (row.get("user_id") or "").strip().isdigit():
                    ids.add(row["user_id"].strip())
    return ids


def with_late_users(users_csv: Path, streams: list[Path], out: Path) -> tuple[Path, set[str]]:
    """The users table once the users the streams name but the table lacked arrived."""
    rows = list(csv.DictReader(users_csv.open(newline="")))
    late = sorted(stream_user_ids(streams) - {r["user_id"] for r in rows}, key=int)
    assert late, "the sample streams name unknown users"
    template = rows[0]
    rows += [{**template, "user_id": user, "user_name": f"Late {user}"} for user in late]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(template))
        writer.writeheader()
        writer.writerows(rows)
    return out, set(late)


def details(harness: Harness, execution: Any) -> dict[str, Any]:
    """A recompute's details (its dates without plays, each re-pinned date's former run)."""
    key = execution.output["recompute"]["details_key"]
    return harness.local.read_json(harness.data_bucket, key)


def data_objects(harness: Harness) -> dict[str, str]:
    """Every object of the data bucket with its ETag: what a run wrote or changed."""
    s3 = harness.local.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=harness.data_bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def lock_item(harness: Harness) -> dict[str, Any] | None:
    """The lock item while held (a released lock keeps only its fence counter)."""
    (table,) = harness.local.pipeline.tables
    item = harness.local.client("dynamodb").get_item(
        TableName=table, Key={"lock_id": {"S": "pipeline"}}, ConsistentRead=True
    )
    found = item.get("Item")
    return found if found and "holder" in found else None


def loaded_by(harness: Harness) -> dict[tuple[str, str], str]:
    """(kpi_date, kpi_type) -> the run that wrote those rows."""
    return {(str(r["kpi_date"]), r["kpi_type"]): r["run_id"] for r in harness.warehouse()}


# --- recompute -----------------------------------------------------------------------------


def test_a_recompute_replaces_its_dates_with_the_pinned_or_the_corrected_catalogue(
    harness, sample, tmp_path
):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)
    assert harness.run("daily").output["status"] == "loaded"
    as_ingested = compute_reference(sample.users_csv, sample.songs_csv, sample.stream_files)
    dates = sorted({r["kpi_date"] for r in as_ingested.genre_rows})

    # The songs are corrected in the source; a new file lands meanwhile.
    new_songs = corrected_songs(sample.songs_csv, tmp_path / "songs.csv")
    harness.load_source(sample.users_csv, new_songs)
    waiting = tmp_path / "streams_waiting.csv"
    waiting.write_text(f"user_id,track_id,listen_time\n1,{_a_track(sample)},{DAY} 23:59:00\n")
    landing_bucket, prefix = harness.landing
    harness.put_streams(waiting)
    curated_before = harness.keys(harness.data_bucket, "curated/")

    pinned = harness.run("recompute-pinned", recompute("pinned"))
    assert pinned.status == "SUCCEEDED", pinned.cause
    summary = pinned.output
    assert summary["status"] == "recomputed"
    assert summary["kind"] == "recompute"
    assert summary["kpi_dates"] == [d.isoformat() for d in dates]
    assert (summary["recompute"]["dates_without_plays"], summary["recompute"]["repinned"]) == (0, 0)
    assert details(harness, pinned) == {"dates_without_plays": [], "repinned_from": {}}
    assert summary["files_processed"] == summary["files_archived"] == 0
    rows = harness.warehouse()
    assert summary["kpi_rows_loaded"] == len(rows)
    assert_matches_reference(rows, as_ingested)  # each date kept its catalogue
    assert {r["run_id"] for r in rows} == {"recompute-pinned"}
    # it ingested nothing and archived nothing
    assert harness.keys(landing_bucket, prefix) == [f"{prefix}streams_waiting.csv"]
    assert harness.keys(harness.data_bucket, "curated/") == curated_before

    # Killed once right after its first new pin: the retry keeps what each date had before.
    effects = harness.local.side_effects
    effects.crash_after = SideEffect("PlanTransform", "put", "date pin")
    current = harness.run("recompute-current", recompute("current"))
    assert current.status == "SUCCEEDED", current.cause
    assert effects.crashes == 1
    effects.disarm()
    assert current.output["recompute"]["repinned"] == len(dates)
    repinned = details(harness, current)["repinned_from"]
    assert repinned == {d.isoformat(): "daily" for d in dates}
    corrected = compute_reference(sample.users_csv, new_songs, sample.stream_files)
    rows = harness.warehouse()
    assert_matches_reference(rows, corrected)
    assert rows != [] and {r["run_id"] for r in rows} == {"recompute-current"}

    # Again: the same KPIs, nothing counted twice, nothing re-pinned from another run.
    again = harness.run("recompute-again", recompute("current"))
    assert details(harness, again)["repinned_from"] == {
        d.isoformat(): "recompute-current" for d in dates
    }
    assert_matches_reference(harness.warehouse(), corrected)
    assert len(harness.warehouse()) == len(rows)

    # The file that waited is taken by the next daily run, its date with the new catalogue.
    daily = harness.run("daily-after")
    assert daily.output["status"] == "loaded"
    assert daily.output["files_processed"] == 1
    assert_matches_reference(
        harness.warehouse(),
        compute_reference(sample.users_csv, new_songs, [*sample.stream_files, waiting]),
    )
    assert lock_item(harness) is None


def _a_track(sample: Any) -> str:
    with sample.songs_csv.open(newline="") as handle:
        return str(next(csv.DictReader(handle))["track_id"])


def test_a_range_without_plays_is_left_as_it_is(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    assert harness.run("daily").output["status"] == "loaded"
    before = harness.warehouse()

    # the longest range allowed (366 days), none of them with a play
    far = {"from": "2029-07-01", "to": "2030-07-01"}
    execution = harness.run("recompute-empty", recompute(**far))

    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["status"] == "recomputed"
    assert execution.output["kpi_dates"] == []
    assert execution.output["recompute"]["dates_without_plays"] == 366
    without = details(harness, execution)["dates_without_plays"]
    assert (len(without), without[0], without[-1]) == (366, "2029-07-01", "2030-07-01")
    assert harness.warehouse() == before
    # The dates stay out of the states: a long range is counted there, listed in S3.
    assert harness.local.payloads.largest.size < 4096


@pytest.mark.parametrize(
    ("run_input", "message"),
    [
        (recompute(**{"from": "2024-06-26", "to": "2024-06-25"}), "is after"),
        (recompute(**{"from": "2024-6-25", "to": "2024-06-26"}), "YYYY-MM-DD"),
        (recompute(**{"from": "2024-02-30", "to": "2024-03-01"}), "YYYY-MM-DD"),
        (recompute(**{"from": "2023-01-01", "to": "2024-01-02"}), "max_recompute_days (366)"),
        (recompute("latest"), "recompute.catalogue"),
        ({"recompute": {"from": "2024-06-25"}}, "lacks ['to']"),
        ({"recompte": {"from": "2024-06-25", "to": "2024-06-25"}}, "unknown input key"),
        ({**recompute(), **REPLAY}, "cannot be asked in one execution"),
        ({"replay_quarantine": {"reasons": ["invalid_user_id"]}}, "can never pass"),
        ({"replay_quarantine": {"reasons": []}}, "non-empty list"),
    ],
    ids=[
        "reversed",
        "malformed",
        "no-such-day",
        "too-long",
        "catalogue",
        "no-end",
        "typo",
        "both",
        "not-replayable",
        "no-reason",
    ],
)
def test_a_bad_request_fails_at_once_touching_nothing(harness, sample, run_input, message):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    assert harness.run("daily").output["status"] == "loaded"
    harness.put_streams(sample.stream_files[1])
    objects, rows = data_objects(harness), harness.warehouse()

    execution = harness.run("bad-request", run_input)

    assert execution.status == "FAILED"
    assert execution.failed_state == "CheckRequest"
    assert execution.error == "InvalidRequest"
    assert message in json.loads(execution.cause)["errorMessage"]
    # Not even a snapshot or a run record: only the outcome of the refusal, for the report.
    outcome = "runs/outcomes/bad-request.json"
    assert {k: v for k, v in data_objects(harness).items() if k != outcome} == objects
    refusal = harness.local.read_json(harness.data_bucket, outcome)
    assert (refusal["status"], refusal["failed_state"]) == ("failed", "CheckRequest")
    assert harness.warehouse() == rows
    assert lock_item(harness) is None
    entered = [
        e["stateEnteredEventDetails"]["name"]
        for e in execution.history
        if e["type"].endswith("StateEntered")
    ]
    assert "AcquireLock" not in entered and "ExtractRds" not in entered


def test_an_execution_named_like_the_outcomes_folder_is_refused(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    execution = harness.run("outcomes")
    assert (execution.status, execution.failed_state) == ("FAILED", "CheckRequest")
    assert execution.error == "InvalidRequest"
    assert harness.keys(harness.data_bucket) == ["runs/outcomes/outcomes.json"]


def test_a_recompute_waits_for_the_lock_like_any_run(harness, sample):
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(sample.stream_files[0])
    assert harness.run("first").output["status"] == "loaded"

    # A daily run holds the lock: the recompute ends already_running, touching nothing.
    harness.put_streams(sample.stream_files[1])
    loading, release = harness.hold("load.handler.handler", run_id="daily")
    daily = harness.local.start("daily")
    assert loading.wait(timeout=60)
    refused = harness.local.wait(harness.local.start("recompute", recompute()))
    release.set()
    assert harness.local.wait(daily).output["status"] == "loaded"
    assert refused.output["status"] == "already_running"
    assert "recompute" not in set(loaded_by(harness).values())

    # A recompute holds the lock: a daily run (or a replay) ends already_running.
    planning, release = harness.hold("transform.plan.handler", run_id="recompute-2")
    running = harness.local.start("recompute-2", recompute())
    assert planning.wait(timeout=60)
    refused_daily = harness.local.wait(harness.local.start("daily-2"))
    refused_replay = harness.local.wait(harness.local.start("replay-2", REPLAY))
    release.set()
    assert harness.local.wait(running).output["status"] == "recomputed"
    assert refused_daily.output["status"] == refused_replay.output["status"] == "already_running"
    assert set(loaded_by(harness).values()) == {"recompute-2"}
    reference = compute_reference(sample.users_csv, sample.songs_csv, sample.stream_files[:2])
    assert_matches_reference(harness.warehouse(), reference)


# --- replay the quarantine -----------------------------------------------------------------


def test_a_replay_accepts_quarantined_rows_valid_now_once(harness, sample, tmp_path):
    streams = list(sample.stream_files)
    harness.load_source(sample.users_csv, sample.songs_csv)
    # A date whose every row names a user the table lacks: quarantined, never pinned.
    new_day = LAST_DAY + dt.timedelta(days=5)
    late_users_file = tmp_path / "streams_new_day.csv"
    track = _a_track(sample)
    late_users_file.write_text(
        "user_id,track_id,listen_time\n"
        + "".join(f"{9000 + n},{track},{new_day} 0{n}:00:00\n" for n in range(3))
    )
    harness.put_streams(*streams, late_users_file)
    first = harness.run("daily")
    assert first.output["status"] == "loaded"
    quarantined = first.output["rows_quarantined"]
    assert quarantined["unknown_user_id"] >= 3

    # The users arrive in the source a day late.
    users, late = with_late_users(
        sample.users_csv, [*streams, late_users_file], tmp_path / "users.csv"
    )
    harness.load_source(users, sample.songs_csv)

    # Replayed against the snapshot each date is validated with: the pinned dates' snapshot
    # still lacks the users; the new day has no pin, so today's (with them) decides.
    replay = harness.run("replay-1", REPLAY)
    assert replay.status == "SUCCEEDED", replay.cause
    result = replay.output["replay"]
    assert replay.output["status"] == "replayed"
    assert result["rows_rechecked"] == {
        "unknown_track_id": quarantined["unknown_track_id"],
        "unknown_user_id": quarantined["unknown_user_id"],
    }
    assert result["rows_accepted"] == {"unknown_user_id": 3}
    assert result["kpi_dates"] == [new_day.isoformat()]
    assert replay.output["kpi_dates"] == [new_day.isoformat()]
    still = sum(result["rows_still_quarantined"].values())
    assert still == sum(result["rows_rechecked"].values()) - 3
    with_users = compute_reference(users, sample.songs_csv, [*streams, late_users_file])
    assert_matches_reference(harness.warehouse(), with_users, dates={new_day})

    # To count the others, re-pin their dates to today's catalogue, then replay.
    assert harness.run("repin", recompute("current")).output["status"] == "recomputed"
    replay = harness.run("replay-2", REPLAY)
    result = replay.output["replay"]
    accepted = result["rows_accepted"]["unknown_user_id"]
    assert accepted == quarantined["unknown_user_id"] - 3
    assert result["rows_replayed_before"] == 3
    # a row of an unknown user and an unknown track now fails for its track
    assert set(result["rows_still_quarantined"]) == {"unknown_track_id"}
    rows = harness.warehouse()
    assert_matches_reference(rows, with_users)
    assert with_users.rows_quarantined.get("unknown_user_id", 0) == 0

    # A second replay counts nothing twice: nothing accepted, the warehouse as it was.
    again = harness.run("replay-3", REPLAY)
    assert again.output["replay"]["rows_accepted"] == {}
    assert again.output["replay"]["rows_replayed_before"] == quarantined["unknown_user_id"]
    assert again.output["kpi_dates"] == []
    assert harness.warehouse() == rows
    # Each accepted row is in exactly one replay entry of the ledger.
    entries = [
        harness.local.read_json(harness.data_bucket, key)
        for key in harness.keys(harness.data_bucket, "ledger/files/")
        if "-replay-" in key
    ]
    rows_accepted = [(e["replay_of"], n) for e in entries for n in e["replayed_rows"]]
    assert len(rows_accepted) == len(set(rows_accepted)) == quarantined["unknown_user_id"]
    assert harness.keys(harness.data_bucket, "ledger/pending/") == []  # all loaded
    assert {e["run_id"] for e in entries} == {"replay-1", "replay-2"}
    assert late


def test_a_replay_limited_to_dates_leaves_the_others_quarantined(harness, sample, tmp_path):
    harness.load_source(sample.users_csv, sample.songs_csv)
    day_one, day_two = LAST_DAY + dt.timedelta(days=3), LAST_DAY + dt.timedelta(days=4)
    track = _a_track(sample)
    late = tmp_path / "streams_late_users.csv"
    late.write_text(
        "user_id,track_id,listen_time\n"
        f"9001,{track},{day_one} 10:00:00\n"
        f"9002,{track},{day_two} 10:00:00\n"
        f"9003,NoSuchTrack,{day_one} 11:00:00\n"
    )
    bad_times = tmp_path / "streams_bad_times.csv"  # its quarantine holds no unknown user
    bad_times.write_text(
        f"user_id,track_id,listen_time\n1,{track},{LAST_DAY} 12:00:00\n1,{track},yesterday\n"
    )
    harness.put_streams(sample.stream_files[0], late, bad_times)
    assert harness.run("daily").output["status"] == "loaded"
    users, _ = with_late_users(sample.users_csv, [late], tmp_path / "users.csv")
    harness.load_source(users, sample.songs_csv)

    only_day_one = {
        "replay_quarantine": {
            "reasons": ["unknown_user_id"],
            "from": day_one.isoformat(),
            "to": day_one.isoformat(),
        }
    }
    result = harness.run("replay", only_day_one).output["replay"]

    # 9001 is accepted; 9003 now fails for its track; 9002's day was not asked for; the
    # file whose ledger entry counts no unknown user is not even read.
    assert result["quarantine_objects"] == 2
    assert result["rows_rechecked"] == {"unknown_user_id": 2}
    assert result["rows_accepted"] == {"unknown_user_id": 1}
    assert result["rows_still_quarantined"] == {"unknown_track_id": 1}
    assert result["kpi_dates"] == [day_one.isoformat()]
    rows = harness.warehouse()
    assert {str(r["kpi_date"]) for r in rows} >= {day_one.isoformat()}
    assert day_two.isoformat() not in {str(r["kpi_date"]) for r in rows}


# --- revalidate ------------------------------------------------------------------------------


def without_users(users_csv: Path, gone: set[str], out: Path) -> Path:
    """The users table once ``gone`` were deleted from the source."""
    rows = [r for r in csv.DictReader(users_csv.open(newline="")) if r["user_id"] not in gone]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


REVALIDATE = {"revalidate": EVERY_DAY}


def test_a_revalidation_moves_plays_invalid_now_to_the_quarantine_once(harness, sample, tmp_path):
    """Users deleted from the source after their plays were accepted: a recompute with
    catalogue current re-pins the dates to today's tables, which still counts the plays
    (they were accepted); a revalidation moves them to the quarantine as unknown_user_id,
    recomputes their dates (the warehouse is then what the corrected users give), counts
    each play once however often it runs, and a replay takes them back should they return."""
    streams = list(sample.stream_files)
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*streams)
    assert harness.run("daily").output["status"] == "loaded"
    played = sorted(stream_user_ids(streams[:1]) & {
        r["user_id"] for r in csv.DictReader(sample.users_csv.open(newline=""))
    }, key=int)[:3]  # fmt: skip
    corrected = without_users(sample.users_csv, set(played), tmp_path / "users.csv")
    harness.load_source(corrected, sample.songs_csv)
    assert harness.run("repin", recompute("current")).output["status"] == "recomputed"
    before = compute_reference(sample.users_csv, sample.songs_csv, streams)
    assert_matches_reference(harness.warehouse(), before)  # accepted plays are kept

    first = harness.run("revalidate-1", REVALIDATE)

    assert first.status == "SUCCEEDED", first.cause
    assert first.output["status"] == "revalidated"
    result = first.output["revalidation"]
    after = compute_reference(corrected, sample.songs_csv, streams)
    moved = after.rows_quarantined["unknown_user_id"] - before.rows_quarantined.get(
        "unknown_user_id", 0
    )
    assert moved > 0
    # every accepted play was checked, and the plays of the deleted users moved (a play the
    # file holds twice is one play: moved once)
    assert result["plays_checked"] == before.plays_valid
    assert result["plays_quarantined"] == {
        "unknown_user_id": before.plays_valid - after.plays_valid
    }
    assert result["kpi_dates"] == first.output["kpi_dates"] != []
    assert_matches_reference(harness.warehouse(), after)
    assert harness.keys(harness.data_bucket, "ledger/pending/") == []

    again = harness.run("revalidate-2", REVALIDATE)

    assert again.output["revalidation"]["plays_quarantined"] == {}
    assert again.output["revalidation"]["plays_quarantined_before"] == sum(
        result["plays_quarantined"].values()
    )
    assert again.output["kpi_dates"] == []
    assert_matches_reference(harness.warehouse(), after)

    # The users come back: the moved plays are quarantined rows like any, replayed in.
    harness.load_source(sample.users_csv, sample.songs_csv)
    assert harness.run("repin-2", recompute("current")).output["status"] == "recomputed"
    replay = harness.run("replay", {"replay_quarantine": {"reasons": ["unknown_user_id"]}})
    assert replay.status == "SUCCEEDED", replay.cause
    assert_matches_reference(harness.warehouse(), before)
