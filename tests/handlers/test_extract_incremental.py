"""ExtractRds reading incrementally, on a real PostgreSQL: rows inserted, updated and
deleted between runs; each snapshot compared with a full extract of the same moment."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import psycopg2
import pyarrow.parquet as pq
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from extract_rds.handler import extract_tables
from kpi_pipeline import settings as pipeline_settings
from kpi_pipeline.contracts import SourceSnapshot
from kpi_pipeline.errors import ConfigurationError, SourceSchemaError
from kpi_pipeline.layout import Layout
from kpi_pipeline.settings import StorageSettings, load
from kpi_pipeline.source_state import mark_processed
from kpi_pipeline.storage import Storage
from tests.handlers.support import CONTEXT, DATA_BUCKET, SECRET_ID, event, execute, read_json

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
    """Inserts, an update and deletes (a song, a user) between two reads: the incremental
    snapshot is the full read's at once, not after the next reconciliation (a deleted user
    kept in the snapshot would validate plays on a new date and be pinned with it)."""
    first = extract("run-1")
    assert {t: r["mode"] for t, r in first["tables"].items()} == {"users": "full", "songs": "full"}
    change_the_source(incremental)
    execute(incremental, "DELETE FROM users WHERE user_id = 2")

    second = extract("run-2")
    reference = extract("reference-2", full=True, mark=False)

    users, songs = second["tables"]["users"], second["tables"]["songs"]
    # Users are ids only: the whole key column is the whole read, every run.
    assert (users["mode"], users["rows_read"], users["rows_changed"]) == ("full", 2, 1)
    assert users["rows_deleted"] == 1
    # Songs: read from the watermark (START: the untouched rows are stamped exactly there,
    # so they are read again); changed, the new song and the updated one; deleted, song 1,
    # gone from the key column read whole beside the changes.
    assert (songs["mode"], songs["rows_read"], songs["rows_changed"]) == ("incremental", 3, 2)
    assert songs["rows_deleted"] == 1
    assert songs["watermark"] > START
    assert snapshot_rows(cloud, second) == snapshot_rows(cloud, reference)

    third = extract("run-3", full=True)  # {"full_extract": true}: nothing left to find

    assert third["tables"]["songs"]["mode"] == "full"
    assert third["tables"]["songs"]["rows_deleted"] == 0
    assert snapshot_rows(cloud, third) == snapshot_rows(cloud, reference)


def test_a_song_deleted_and_inserted_again_under_another_key_is_one_song(
    incremental: str, cloud: Any
) -> None:
    """A correction by delete and re-insert under a new id: the old row is gone at once."""
    extract("run-1")
    execute(
        incremental,
        "DELETE FROM songs WHERE id = 2; "
        "INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity, "
        "duration_ms, track_genre) VALUES (20, 'B', 'Y', 'Album', 'Song B', 45, 240000, 'pop')",
    )

    second = extract("run-2")

    songs = [dict(r) for r in snapshot_rows(cloud, second)["songs"]]
    assert [(s["track_id"], s["popularity"]) for s in songs if s["track_id"] == "B"] == [("B", 45)]
    assert second["tables"]["songs"]["rows_deleted"] == 1


@pytest.mark.parametrize("overlap", [0, 2])
def test_a_transaction_open_across_a_read_is_read_once_it_commits(
    incremental: str, cloud: Any, monkeypatch: pytest.MonkeyPatch, overlap: int
) -> None:
    """A batch job opens a transaction and stamps its row with now() (the transaction's
    start); other rows change and commit after it; the read sees their times but not the
    open row. The watermark must stop at the open transaction's start, or the row, once
    committed, is older than every later read's start: never read (the overlap, here 0 and
    2 s, does not save it once the transaction has been open for longer)."""
    configure(monkeypatch, overlap_seconds=overlap)
    extract("run-1")
    batch = psycopg2.connect(incremental)
    try:
        with batch.cursor() as cur:  # BEGIN (psycopg2 opens the transaction)
            cur.execute(
                "INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity, "
                "duration_ms, track_genre) VALUES (9, 'J', 'Z', 'Album', 'Batch', 50, 100000, "
                "'pop')"
            )
        time.sleep(overlap + 1)
        execute(incremental, "UPDATE songs SET popularity = 1, updated_at = now() WHERE id = 0")
        during = extract("run-2")
        batch.commit()
    finally:
        batch.close()

    after = extract("run-3")

    assert "J" not in {dict(r)["track_id"] for r in snapshot_rows(cloud, during)["songs"]}
    assert "J" in {dict(r)["track_id"] for r in snapshot_rows(cloud, after)["songs"]}
    reference = extract("reference-3", full=True, mark=False)
    assert snapshot_rows(cloud, after) == snapshot_rows(cloud, reference)


def test_a_run_that_fails_before_its_load_reads_the_same_changes_again(
    incremental: str, cloud: Any
) -> None:
    extract("run-1")
    change_the_source(incremental)

    failed = extract("run-2", mark=False)  # never reached Archive: no mark
    again = extract("run-3")

    # The same reads (a whole read's time aside: users are read whole every run).
    assert again["tables"] == {
        table: {**read, **{k: again["tables"][table][k] for k in ("raw_key", "full_at")}}
        for table, read in failed["tables"].items()
    }
    assert again["tables"]["songs"]["full_at"] == failed["tables"]["songs"]["full_at"]
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
    assert extract("run-2")["tables"]["songs"]["mode"] == "incremental"
    state = read_json(cloud.s3, "source/state.json")
    state["tables"]["songs"]["full_at"] = "2020-01-01T00:00:00+00:00"
    cloud.s3.put_object(Bucket=DATA_BUCKET, Key="source/state.json", Body=json.dumps(state))

    third = extract("run-3")

    assert third["tables"]["songs"]["mode"] == "full"


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


def test_a_raw_snapshot_of_other_columns_is_never_merged_into(incremental: str, cloud: Any) -> None:
    """A deploy that extracts other columns than the kept snapshot holds: read whole."""
    extract("run-1")
    state = read_json(cloud.s3, "source/state.json")
    state["tables"]["songs"]["columns"] = ["id", "track_id"]
    cloud.s3.put_object(Bucket=DATA_BUCKET, Key="source/state.json", Body=json.dumps(state))

    second = extract("run-2")

    assert second["tables"]["songs"]["mode"] == "full"
    assert second["tables"]["songs"]["rows_deleted"] == 0  # not compared with the old file


def test_an_extract_user_that_cannot_see_other_sessions_is_told_what_to_grant(
    incremental: str, cloud: Any
) -> None:
    """Without pg_read_all_stats, another role's open transaction is invisible (its
    xact_start NULL): the watermark could pass it. The read refuses, naming the grant."""
    extract("run-1")
    reader = json.loads(cloud.secrets.get_secret_value(SecretId=SECRET_ID)["SecretString"])
    execute(incremental, f"REVOKE pg_read_all_stats FROM {reader['username']}")
    other = f"{reader['username']}_app"[:63]
    execute(incremental, f"CREATE ROLE {other} LOGIN")
    try:
        app = psycopg2.connect(make_dsn(incremental, user=other))
        try:
            with pytest.raises(
                ConfigurationError,
                match=rf"GRANT pg_read_all_stats TO {reader['username']} .*or unset source",
            ):
                extract("run-2")
        finally:
            app.close()
        execute(incremental, f"GRANT pg_read_all_stats TO {reader['username']}")
        assert extract("run-3")["tables"]["songs"]["mode"] == "incremental"
    finally:
        execute(incremental, f"DROP ROLE IF EXISTS {other}")


def test_a_date_change_column_is_read_from_the_watermarks_day(
    incremental: str, cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DATE change column with its watermark capped at a time of day (a row dated
    tomorrow, from a writer in a zone ahead of UTC): the next read starts on that day, not
    at that time, or every row dated today would be left out."""
    configure(monkeypatch, overlap_seconds=3600)
    execute(incremental, "ALTER TABLE songs ALTER COLUMN updated_at TYPE date")
    execute(incremental, "UPDATE songs SET updated_at = current_date")
    execute(incremental, "UPDATE songs SET updated_at = current_date + 1 WHERE id = 2")
    extract("run-1")
    execute(incremental, "UPDATE songs SET popularity = 7, updated_at = current_date WHERE id = 0")

    second = extract("run-2")

    reference = extract("reference-2", full=True, mark=False)
    assert snapshot_rows(cloud, second) == snapshot_rows(cloud, reference)


def test_a_timestamp_change_column_of_a_database_not_in_utc_is_refused(
    incremental: str, cloud: Any
) -> None:
    """A `timestamp without time zone` column holds the writers' wall time: in a database
    whose TimeZone is not UTC it cannot be compared with the instants the watermark is
    capped at. Refused, naming the column, the zone and what to do."""
    database = parse_dsn(incremental)["dbname"]
    execute(incremental, f"ALTER DATABASE \"{database}\" SET timezone = 'America/New_York'")
    execute(incremental, "ALTER TABLE songs ALTER COLUMN updated_at TYPE timestamp")

    with pytest.raises(
        SourceSchemaError,
        match=r"songs.updated_at is a timestamp without time zone .* America/New_York",
    ):
        extract("run-1")

    execute(incremental, f"ALTER DATABASE \"{database}\" SET timezone = 'UTC'")
    assert extract("run-2")["tables"]["songs"]["mode"] == "full"


def test_a_replica_is_refused_for_an_incremental_read(
    incremental: str, cloud: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica's pg_stat_activity shows none of the primary's transactions: the cap
    would see nothing. (Simulated: pg_is_in_recovery() answering true.)"""
    from kpi_pipeline import source

    monkeypatch.setattr(
        source, "HORIZON_SQL", source.HORIZON_SQL.replace("pg_is_in_recovery()", "TRUE")
    )
    with pytest.raises(ConfigurationError, match="a replica"):
        extract("run-1")


def test_rows_without_a_key_read_incrementally_are_kept_as_a_full_read_keeps_them(
    incremental: str, cloud: Any
) -> None:
    """Two identical rows without a key (a NULL id) arrive after a read: the merged raw
    snapshot keeps both, as a full read does (a set difference once made them one)."""
    extract("run-1")
    execute(incremental, "ALTER TABLE songs ALTER COLUMN id DROP NOT NULL")
    for _ in range(2):
        execute(
            incremental,
            "INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity, "
            "duration_ms, track_genre) VALUES (NULL, 'N', 'Z', 'Album', 'Twin', 5, 100000, 'pop')",
        )

    second = extract("run-2")
    reference = extract("reference-2", full=True, mark=False)

    def raw_rows(result: dict[str, Any]) -> list[Any]:
        key = result["tables"]["songs"]["raw_key"]
        body = cloud.s3.get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read()
        return sorted(map(repr, pq.read_table(io.BytesIO(body)).to_pylist()))

    assert second["tables"]["songs"]["mode"] == "incremental"
    assert raw_rows(second) == raw_rows(reference)
    assert second["tables"]["songs"]["key_unique"] is False  # the next read is whole
