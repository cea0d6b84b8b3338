"""Each date is validated and computed with the source tables of its first acceptance.

docs/kpis.md: a late file gives exactly the KPIs it would have given on time. So a late row is
checked against the users and songs its date was pinned to, not today's tables, and a file
spanning dates checks each row against its own date's snapshot (a date not pinned yet uses
today's, and is pinned to it).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from tests.harness import SAMPLE_CONFIG, assert_matches_reference
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e

DAY = SAMPLE_CONFIG.start_date
NEW_DAY = DAY + dt.timedelta(days=10)


def rewrite(path: Path, out: Path, keep, extra: list[dict[str, str]]) -> Path:
    rows = list(csv.DictReader(path.open(newline="")))
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([r for r in rows if keep(r)] + extra)
    return out


def test_a_late_file_is_validated_against_the_snapshot_its_dates_were_pinned_to(
    harness, sample, tmp_path
):
    harness.load_source(sample.users_csv, sample.songs_csv)
    on_time = sample.stream_files[0]  # the start date (and a few late rows of the day before)
    harness.put_streams(on_time)
    assert harness.run("on-time").output["status"] == "loaded"

    songs = list(csv.DictReader(sample.songs_csv.open(newline="")))
    removed_track = songs[0]["track_id"]
    users = list(csv.DictReader(sample.users_csv.open(newline="")))
    removed_user = users[0]["user_id"]
    kept_user = users[1]["user_id"]
    added = {**songs[1], "id": "999999", "track_id": "TrackAddedAfterThePin"}
    new_songs = rewrite(
        sample.songs_csv, tmp_path / "songs.csv", lambda r: r["track_id"] != removed_track, [added]
    )
    new_users = rewrite(
        sample.users_csv, tmp_path / "users.csv", lambda r: r["user_id"] != removed_user, []
    )
    harness.load_source(new_users, new_songs)

    late = tmp_path / "streams_late.csv"
    late.write_text(
        "user_id,track_id,listen_time\n"
        f"{kept_user},{removed_track},{DAY} 12:00:00\n"  # gone from songs today, not on DAY
        f"{removed_user},{songs[1]['track_id']},{DAY} 12:01:00\n"  # gone from users today
        f"{kept_user},TrackAddedAfterThePin,{DAY} 12:02:00\n"  # unknown on DAY
        f"{kept_user},TrackAddedAfterThePin,{NEW_DAY} 09:00:00\n"  # a new date: today's
    )
    harness.put_streams(late)
    execution = harness.run("late")

    assert execution.output["status"] == "loaded", execution.cause
    assert execution.output["rows_quarantined"] == {"unknown_track_id": 1}
    rows = harness.warehouse()
    as_on_time = compute_reference(sample.users_csv, sample.songs_csv, [on_time, late])
    assert_matches_reference(rows, as_on_time, dates={DAY})
    with_today = compute_reference(new_users, new_songs, [late])
    assert_matches_reference(rows, with_today, dates={NEW_DAY})
