"""The bench's source: a PostgreSQL of 2,000,000 users and 500,000 song rows.

Kept in ``.bench/source/`` (the embedded server's data) and filled once, in SQL
(``generate_series``), with the local tables' schema: Spotify-like songs (some with two
artists, 114 genres), every row last changed in 2024 (``updated_at``, the change
column the incremental extract reads), spread over a year as a live table's are: 15 s apart
for users, 60 s for songs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2

from benchmarks.data import CACHE
from local_runner.databases import SONGS_DDL, USERS_DDL, local_databases

USERS = 2_000_000
SONGS = 500_000
GENRES = 114
CHANGED_EVERY = 1000  # an incremental run finds one row in 1,000 changed


@contextlib.contextmanager
def bench_source() -> Iterator[str]:
    """The DSN of the bench's source database, filled if it is not yet."""
    folder = CACHE / "source"
    folder.mkdir(parents=True, exist_ok=True)
    with local_databases(folder) as databases:
        if databases.source_given:  # the bench drops and fills its tables: never the user's
            raise SystemExit(
                "make bench fills a source database of its own: unset RDS_DSN (it would drop "
                "and refill that database's users and songs)"
            )
        dsn = databases.source_dsn
        if _rows(dsn) != (USERS, SONGS):
            _fill(dsn)
        # As a table read incrementally has it: its change column indexed.
        _execute(
            dsn,
            "CREATE INDEX IF NOT EXISTS users_updated_at ON users (updated_at)",
            "CREATE INDEX IF NOT EXISTS songs_updated_at ON songs (updated_at)",
        )
        yield dsn


def touch_changed_rows(dsn: str) -> None:
    """One row in CHANGED_EVERY of each table changed now (what a day of edits looks like)."""
    _execute(
        dsn,
        f"UPDATE users SET user_age = user_age, updated_at = now() "
        f"WHERE user_id % {CHANGED_EVERY} = 0",
        f"UPDATE songs SET popularity = (popularity + 1) % 101, updated_at = now() "
        f"WHERE id % {CHANGED_EVERY} = 0",
    )


def _rows(dsn: str) -> tuple[int, int] | None:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT to_regclass('users') IS NOT NULL AND to_regclass('songs') IS NOT NULL"
            )
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM songs)")
            users, songs = cur.fetchone()
            return int(users), int(songs)
    finally:
        conn.close()


def _fill(dsn: str) -> None:
    _execute(
        dsn,
        "DROP TABLE IF EXISTS users, songs",
        USERS_DDL,
        SONGS_DDL,
        f"""
        INSERT INTO users (user_id, user_name, user_age, user_country, created_at, updated_at)
        SELECT g, 'Listener ' || g, 16 + g % 60,
            (ARRAY['US', 'GB', 'FR', 'DE', 'BR', 'JP', 'IN', 'MX'])[1 + g % 8],
            TIMESTAMP '2020-01-01' + g * interval '1 minute',
            TIMESTAMPTZ '2024-01-01' + g * interval '15 seconds'
        FROM generate_series(1, {USERS}) AS g
        """,
        f"""
        INSERT INTO songs (id, track_id, artists, album_name, track_name, popularity,
            duration_ms, explicit, danceability, energy, key, loudness, mode, speechiness,
            acousticness, instrumentalness, liveness, valence, tempo, time_signature,
            track_genre, updated_at)
        SELECT g, substr(md5(g::text), 1, 22),
            'Artist ' || g % 40000 || CASE WHEN g % 7 = 0 THEN ';Artist ' || g % 9000 ELSE '' END,
            'Album ' || g % 120000, 'Track number ' || g, g % 101, 90000 + g % 300000,
            g % 9 = 0, (g % 1000) / 1000.0, (g % 997) / 997.0, g % 12, -(g % 60) / 2.0, g % 2,
            (g % 89) / 89.0, (g % 83) / 83.0, (g % 79) / 79.0, (g % 73) / 73.0, (g % 71) / 71.0,
            60 + g % 140, 3 + g % 3, 'genre-' || g % {GENRES},
            TIMESTAMPTZ '2024-01-01' + g * interval '60 seconds'
        FROM generate_series(1, {SONGS}) AS g
        """,
        "ANALYZE users",
        "ANALYZE songs",
    )


def _execute(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()
