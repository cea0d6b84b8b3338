"""The incremental extract equals a full read of the same moment, whatever the source does:
random sequences of inserts, updates (to a new change time or to none), deletes, re-inserts
under a new key, and transactions held open across reads, interleaved with runs, on a real
PostgreSQL. After every run, the snapshot the run kept equals a full read made right after
it (derandomized: the same examples on every machine, shrunk to the smallest on failure)."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.handlers.support import DATA_BUCKET, execute, keys
from tests.handlers.test_extract_incremental import configure, extract, snapshot_rows

# A new song, unless one of that id exists (the source's key is unique).
SONG = (
    "INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity, "
    "duration_ms, track_genre) SELECT {id}, 'T{id}', 'Z', 'Album', 'Song {id}', {pop}, "
    "200000, 'pop' WHERE NOT EXISTS (SELECT 1 FROM songs WHERE id = {id})"
)

# The seed's songs and users are 0-2 and 1-2; inserts add 10-13, a held transaction 20-21.
ids = st.sampled_from([0, 1, 2, 10, 11, 12, 13, 20, 21])
step = st.one_of(
    st.tuples(st.just("insert_song"), ids, st.integers(1, 99)),
    st.tuples(st.just("update_song"), ids, st.integers(1, 99)),
    st.tuples(st.just("update_song_untimed"), ids, st.integers(1, 99)),
    st.tuples(st.just("delete_song"), ids),
    st.tuples(st.just("reinsert_song"), ids),  # deleted, and inserted again under a new key
    st.tuples(st.just("insert_user"), ids),
    st.tuples(st.just("delete_user"), ids),
    st.tuples(st.just("hold_open"), ids, st.integers(1, 99)),  # committed after the next run
    st.just(("run",)),
)


class Source:
    """The source as the steps change it, with at most one transaction held open."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.held: Any = None
        self.next_id = 100

    def apply(self, action: tuple[Any, ...]) -> None:
        kind, *args = action
        if kind == "insert_song":
            self._sql(SONG.format(id=10 + args[0] % 4, pop=args[1]))
        elif kind == "update_song":
            self._sql(
                f"UPDATE songs SET popularity = {args[1]}, updated_at = now() WHERE id = {args[0]}"
            )
        elif kind == "update_song_untimed":
            self._sql(
                f"UPDATE songs SET popularity = {args[1]}, updated_at = NULL WHERE id = {args[0]}"
            )
        elif kind == "delete_song":
            self._sql(f"DELETE FROM songs WHERE id = {args[0]}")
        elif kind == "reinsert_song":
            self.next_id += 1
            self._sql(
                f"WITH gone AS (DELETE FROM songs WHERE id = {args[0]} RETURNING *) "
                f"INSERT INTO songs SELECT {self.next_id}, track_id, artists, album_name, "
                "track_name, popularity, duration_ms, explicit, danceability, energy, key, "
                "loudness, mode, speechiness, acousticness, instrumentalness, liveness, valence, "
                "tempo, time_signature, track_genre, now() FROM gone"
            )
        elif kind == "insert_user":
            self._sql(
                f"INSERT INTO users (user_id, user_name) VALUES ({args[0]}, 'U') "
                "ON CONFLICT (user_id) DO NOTHING"
            )
        elif kind == "delete_user":
            self._sql(f"DELETE FROM users WHERE user_id = {args[0]}")
        elif kind == "hold_open" and self.held is None:
            self.held = psycopg2.connect(self.dsn)
            with self.held.cursor() as cur:  # stamped now(): the transaction's start
                cur.execute(SONG.format(id=20 + args[0] % 2, pop=args[1]))

    def commit_held(self) -> None:
        if self.held is not None:
            self.held.commit()
            self.held.close()
            self.held = None

    def _sql(self, statement: str) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                # Blocked by the held transaction's row: that row is not the step's to touch.
                cur.execute("SET lock_timeout = '200ms'")
                with contextlib.suppress(psycopg2.errors.LockNotAvailable):
                    cur.execute(statement)
        finally:
            conn.close()


@pytest.fixture
def seeded(world: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The world, with the change column nullable, its rows kept to start each example
    from; no overlap: the watermark alone must be right."""
    incremental = world
    execute(incremental, "ALTER TABLE songs ALTER COLUMN updated_at DROP NOT NULL")
    execute(
        incremental,
        "CREATE TABLE seed_users AS SELECT * FROM users; "
        "CREATE TABLE seed_songs AS SELECT * FROM songs",
    )
    configure(monkeypatch, overlap_seconds=0)
    return incremental


@settings(
    max_examples=16,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp", "date"])
@given(st.lists(step, min_size=1, max_size=10))
# Always tried: a row stamped by a transaction held open while a later change commits.
@example(steps=[("hold_open", 0, 5), ("update_song", 1, 7)])
# A song deleted, another re-inserted under a new key, a user deleted.
@example(steps=[("delete_song", 0), ("reinsert_song", 2), ("delete_user", 1)])
def test_every_incremental_snapshot_equals_a_full_read_of_that_moment(
    seeded: str, cloud: Any, column_type: str, steps: list[tuple[Any, ...]]
) -> None:
    """With each type a change column may have: a timestamp with time zone, one without (a
    UTC database), a date (a watermark capped at a time of day reads from its day)."""
    execute(
        seeded,
        f"ALTER TABLE songs ALTER COLUMN updated_at TYPE {column_type}; "
        "TRUNCATE users, songs; INSERT INTO users SELECT * FROM seed_users; "
        "INSERT INTO songs SELECT * FROM seed_songs",
    )
    for key in keys(cloud.s3, DATA_BUCKET):
        cloud.s3.delete_object(Bucket=DATA_BUCKET, Key=key)
    source = Source(seeded)
    extract("run-0")
    try:
        runs = 0
        # The last run after every held transaction committed: none stays unread.
        for action in [*steps, ("run",), ("commit",), ("run",)]:
            if action[0] == "commit":
                source.commit_held()
            elif action[0] != "run":
                source.apply(action)
            else:
                runs += 1
                kept = extract(f"run-{runs}")
                whole = extract(f"whole-{runs}", full=True, mark=False)  # the same moment
                assert snapshot_rows(cloud, kept) == snapshot_rows(cloud, whole), steps
                source.commit_held()  # held open across that read, committed after it
    finally:
        source.commit_held()
