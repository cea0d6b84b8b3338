"""ExtractRds reading incrementally, on a real PostgreSQL: rows inserted, updated and
deleted between runs; each snapshot compared with a full extract of the same moment."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest

from extract_rds.handler import extract_tables
from kpi_pipeline import settings as pipeline_settings
from kpi_pipeline.contracts import SourceSnapshot
from kpi_pipeline.errors import SourceSchemaError
from kpi_pipeline.layout import Layout
from kpi_pipeline.settings import StorageSettings, load
from kpi_pipeline.source_state import mark_processed
from kpi_pipeline.storage import Storage
from tests.handlers.support import CONTEXT, DATA_BUCKET, event, execute, read_json

# A moment before any change the tests make (every row starts there).
START = "2024-06-01 00:00:00+00"


@pytest.fixture
def incremental(world: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both tables read incrementally on updated_at, every row last changed at START; no
    overlap (rows changed at the watermark itself are read again), so the rows read are the
    rows changed since."""
    execute(
        world, f"UPDATE users SET updated_at = '{START}'; UPDATE songs SET updated_at = '{START}'"
    )
    configure(monkeypatch, overlap_seconds=0)
    return world


def configure(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    monkeypatch.setenv("SOURCE_USERS_CHANGED_COLUMN", "updated_at")
    monkeypatch.setenv("SOURCE_SONGS_CHANGED_COLUMN", "updated_at")
    for name, value in values.items():
        monkeypatch.setenv(f"SOURCE_{name.upper()}", str(value))
    pipeline_settings.clear_cache()  # as a function configured so, from its cold start


def extract(run_id: str, *, full: bool = False, mark: bool = True) -> dict[str, Any]:
    """ExtractRds; then what Archive does once the run is through (unless it failed)."""
    execution_input = {"full_extract": True} if full else {}
    result = extract_tables(
        event("extract_rds", run_id=run_id, execution_input=execution_input), CONTEXT
    )
    if mark:
        layout = Layout.from_settings(load(StorageSettings))
        mark_processed(Storage(), layout, SourceSnapshot.model_validate(result), run_id)
    return result


def snapshot_rows(cloud: Any, result: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """The cleaned snapshot's rows (what the KPIs read), in a stable order."""
    rows = {}
    for table, key in (("users", result["users_key"]), ("songs", result["songs_key"])):
        body = cloud.s3.get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read()
        table_rows = pq.read_table(io.BytesIO(body)).to_pylist()
        rows[table] = sorted((tuple(sorted(r.items())) for r in table_rows), key=repr)
    return rows


def change_the_source(dsn: str) -> None:
    """A new user, a new song, a song's popularity changed, a song deleted; all now."""
    execute(
        dsn,
        """
        INSERT INTO users (user_id, user_name) VALUES (3, 'New Listener');
        INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity,
                           duration_ms, track_genre)
        VALUES (3, 'C', 'Z', 'Album', 'Song C', 10, 100000, 'rock');
        UPDATE songs SET popularity = 99, updated_at = now() WHERE id = 0;
        DELETE FROM songs WHERE id = 1;
        """,
    )


def test_each_incremental_snapshot_equals_a_full_extract_of_that_moment(
    incremental: str, cloud: Any
) -> None:
    first = extract("run-1")
    assert {t: r["mode"] for t, r in first["tables"].items()} == {"users": "full", "songs": "full"}
    change_the_source(incremental)

    second = extract("run-2")
    reference = extract("reference-2", full=True, mark=False)

    users, songs = second["tables"]["users"], second["tables"]["songs"]
    # Read: the rows changed at or after the watermark (START: the untouched rows are
    # stamped exactly there, so they are read again). Changed: the new user; the new song
    # and the updated one (a delete is not seen through a watermark).
    assert (users["mode"], users["rows_read"], users["rows_changed"]) == ("incremental", 3, 1)
    assert (songs["mode"], songs["rows_read"], songs["rows_changed"]) == ("incremental", 3, 2)
    assert songs["watermark"] > START
    got, want = snapshot_rows(cloud, second), snapshot_rows(cloud, reference)
    assert got["users"] == want["users"]
    deleted = [r for r in got["songs"] if r not in want["songs"]]
    assert [dict(r)["id"] for r in deleted] == [1]  # until the reconciliation
    assert [r for r in got["songs"] if r not in deleted] == want["songs"]

    third = extract("run-3", full=True)  # {"full_extract": true}: the reconciliation

    assert third["tables"]["songs"]["mode"] == "full"
    assert third["tables"]["songs"]["rows_deleted"] == 1
    assert snapshot_rows(cloud, third) == want


def test_a_run_that_fails_before_its_load_reads_the_same_changes_again(
    incremental: str, cloud: Any
) -> None:
    extract("run-1")
    change_the_source(incremental)

    failed = extract("run-2", mark=False)  # never reached Archive: no mark
    again = extract("run-3")

    assert again["tables"] == {
        table: {**read, "raw_key": again["tables"][table]["raw_key"]}
        for table, read in failed["tables"].items()
    }
    assert snapshot_rows(cloud, again) == snapshot_rows(cloud, failed)
    state = read_json(cloud.s3, "source/state.json")
    assert state["tables"]["songs"]["run_id"] == "run-3"
    assert state["tables"]["songs"]["watermark"] == again["tables"]["songs"]["watermark"]


@pytest.mark.parametrize(("overlap", "caught"), [(3600, True), (0, False)])
def test_the_overlap_catches_a_row_committed_late_with_an_earlier_change_time(
    incremental: str, cloud: Any, monkeypatch: pytest.MonkeyPatch, overlap: int, caught: bool
) -> None:
    """A transaction that stamped its row at 23:30 but committed after the 00:00 read: the
    next read starts at the watermark less the overlap, so it is read all the same."""
    configure(monkeypatch, overlap_seconds=overlap)
    extract("run-1")  # watermark: START
    execute(
        incremental,
        "INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity, "
        "duration_ms, track_genre, updated_at) VALUES (7, 'L', 'Z', 'Album', 'Late', 50, "
        f"100000, 'pop', TIMESTAMPTZ '{START}' - interval '30 minutes')",
    )

    second = extract("run-2")

    track_ids = {dict(r)["track_id"] for r in snapshot_rows(cloud, second)["songs"]}
    assert ("L" in track_ids) is caught
    assert second["tables"]["songs"]["rows_changed"] == (1 if caught else 0)


def test_a_table_is_read_whole_again_once_its_last_full_read_is_too_old(
    incremental: str, cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, full_extract_every_days=7)
    extract("run-1")
    state = read_json(cloud.s3, "source/state.json")
    state["tables"]["users"]["full_at"] = "2020-01-01T00:00:00+00:00"
    cloud.s3.put_object(Bucket=DATA_BUCKET, Key="source/state.json", Body=json.dumps(state))

    second = extract("run-2")

    assert second["tables"]["users"]["mode"] == "full"
    assert second["tables"]["songs"]["mode"] == "incremental"


def test_a_change_column_the_table_lacks_or_that_is_no_timestamp_is_named(
    world: str, cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch)
    monkeypatch.setenv("SOURCE_SONGS_CHANGED_COLUMN", "modified")
    pipeline_settings.clear_cache()
    with pytest.raises(SourceSchemaError, match="no column 'modified'"):
        extract("run-1")

    monkeypatch.setenv("SOURCE_SONGS_CHANGED_COLUMN", "track_name")
    pipeline_settings.clear_cache()
    with pytest.raises(
        SourceSchemaError, match=r"songs.track_name is text: it must be a timestamp"
    ):
        extract("run-1")


def test_a_row_without_a_change_time_is_read_and_a_future_one_hides_nothing(
    incremental: str, cloud: Any
) -> None:
    """A NULL change time cannot be placed: such a row is read every time. A row stamped in
    the future would have set the watermark past every change to come: it is capped at the
    read's own time."""
    execute(incremental, "ALTER TABLE songs ALTER COLUMN updated_at DROP NOT NULL")
    execute(
        incremental,
        "UPDATE songs SET updated_at = NULL WHERE id = 1; "
        "UPDATE songs SET updated_at = TIMESTAMPTZ '2999-01-01' WHERE id = 2",
    )
    first = extract("run-1")
    assert first["tables"]["songs"]["watermark"] < "2999"
    execute(incremental, "UPDATE songs SET popularity = 1, updated_at = now() WHERE id = 0")

    second = extract("run-2")

    songs = {dict(r)["id"]: dict(r) for r in snapshot_rows(cloud, second)["songs"]}
    assert songs[0]["popularity"] == 1  # the change after the future-stamped row is seen
    assert second["tables"]["songs"]["rows_changed"] == 1
    assert second["tables"]["songs"]["rows_read"] == 3  # id 0, the NULL one, the future one


def test_a_key_repeated_in_the_source_makes_the_next_read_whole(
    incremental: str, cloud: Any
) -> None:
    """Merging by a key two rows share could drop the one that did not change: once the
    snapshot shows a repeated (or NULL) key, the table is read whole."""
    execute(
        incremental,
        "INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity, "
        f"duration_ms, track_genre, updated_at) VALUES (2, 'D', 'Z', 'Album', 'Twin', 10, "
        f"100000, 'rock', '{START}')",
    )
    first = extract("run-1")
    assert first["tables"]["songs"]["key_unique"] is False
    assert first["tables"]["users"]["key_unique"] is True

    second = extract("run-2")

    assert second["tables"]["songs"]["mode"] == "full"
    assert second["tables"]["users"]["mode"] == "incremental"


def test_a_raw_snapshot_of_other_columns_is_never_merged_into(incremental: str, cloud: Any) -> None:
    """A deploy that extracts other columns than the kept snapshot holds: read whole."""
    extract("run-1")
    state = read_json(cloud.s3, "source/state.json")
    state["tables"]["songs"]["columns"] = ["id", "track_id"]
    cloud.s3.put_object(Bucket=DATA_BUCKET, Key="source/state.json", Body=json.dumps(state))

    second = extract("run-2")

    assert second["tables"]["songs"]["mode"] == "full"
    assert second["tables"]["songs"]["rows_deleted"] == 0  # not compared with the old file
