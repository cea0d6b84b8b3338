"""The views BI tools read (kpi_pipeline.warehouse.schema.BI_VIEWS): created by the warehouse
setup beside the table, granted to a read-only BI group, and showing exactly the table's
figures whichever engine computed them."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from infra.config import load_config
from infra.warehouse_setup import BI_GROUP, READERS, REPO, render, statements
from kpi_pipeline.warehouse.schema import BI_VIEWS
from local_runner.databases import dsn_as

CONTEXT = json.loads((REPO / "cdk.json").read_text())["context"]
VIEWS = [view.name("music_kpi_metrics") for view in BI_VIEWS]


@pytest.mark.parametrize("env_name", ["local", "dev", "prod"])
def test_the_setup_creates_the_views_and_grants_them_alone_to_the_bi_group(env_name):
    setup = statements(render(load_config(CONTEXT, env_name)))

    for view in VIEWS:
        assert any(s.startswith(f"CREATE OR REPLACE VIEW {view} AS") for s in setup)
        assert f"COMMENT ON VIEW {view} IS" in "\n".join(setup)
    assert f"CREATE GROUP {BI_GROUP}" in setup
    bi_grants = [s for s in setup if s.endswith(f"TO GROUP {BI_GROUP}")]
    assert bi_grants == [
        f"GRANT USAGE ON SCHEMA public TO GROUP {BI_GROUP}",
        f"GRANT SELECT ON {', '.join(VIEWS)} TO GROUP {BI_GROUP}",
    ]
    assert f"GRANT SELECT ON {', '.join(VIEWS)} TO GROUP {READERS}" in setup


def test_every_view_column_has_a_plain_name_and_a_comment():
    for view in BI_VIEWS:
        names = [c.name for c in view.columns]
        assert len(names) == len(set(names)), view.suffix
        for column in view.columns:
            assert column.name.islower() and column.name.replace("_", "").isalnum()
            assert len(column.comment) > 10, (view.suffix, column.name)


def _as_bi_tool(warehouse_dsn: str) -> Any:
    """A BI tool's user: a member of the BI group, with nothing granted of its own (roles
    are the server's: one name per test)."""
    user = f"bi_tool_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(warehouse_dsn)
    with admin, admin.cursor() as cur:
        cur.execute(f"CREATE USER {user}")
        cur.execute(f"ALTER GROUP {BI_GROUP} ADD USER {user}")
    admin.close()
    return psycopg2.connect(dsn_as(warehouse_dsn, user))


def _rows(conn: Any, sql: str) -> list[dict[str, Any]]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql)
        return [dict(row) for row in cur.fetchall()]


@pytest.mark.e2e
@pytest.mark.parametrize("fixture", ["harness", "auto_harness"], ids=["lambda", "both-engines"])
def test_the_views_show_exactly_the_tables_figures(fixture, request, sample):
    """After a run (the Lambda engine; then "auto": the big dates computed in the warehouse),
    a BI tool's user reads the three views, and they hold the table's every figure."""
    harness = request.getfixturevalue(fixture)
    harness.load_source(sample.users_csv, sample.songs_csv)
    harness.put_streams(*sample.stream_files)
    execution = harness.run("views")
    assert execution.output["status"] == "loaded", execution.cause
    engines = execution.output["kpi_dates_in_warehouse"]
    assert engines == (2 if fixture == "auto_harness" else 0)
    table = harness.warehouse()

    bi = _as_bi_tool(harness.warehouse_dsn)
    try:
        genre, hourly, plays = (_rows(bi, f"SELECT * FROM {view} ORDER BY 1, 2") for view in VIEWS)
        for table_only in (
            "music_kpi_metrics",
            "music_kpi_metrics_stage",
            "music_kpi_metrics_fence",
        ):
            bi.rollback()
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                _rows(bi, f"SELECT * FROM {table_only}")
    finally:
        bi.close()

    genre_rows = [r for r in table if r["kpi_type"] == "genre"]
    assert genre == [
        {
            "play_date": r["kpi_date"],
            "genre": r["track_genre"],
            "plays": r["listen_count"],
            "avg_track_duration_seconds": r["avg_track_duration_sec"],
            "popularity_index": r["popularity_index"],
            "top_track": r["most_popular_track"],
            "top_track_id": r["most_popular_track_id"],
            "run_id": r["run_id"],
            "loaded_at": r["loaded_at"],
        }
        for r in sorted(genre_rows, key=lambda r: (r["kpi_date"], r["track_genre"]))
    ]
    hourly_rows = [r for r in table if r["kpi_type"] == "hourly"]
    assert hourly == [
        {
            "play_date": r["kpi_date"],
            "hour_utc": r["stream_hour"],
            "plays": r["listen_count"],
            "listeners": r["unique_listeners"],
            "top_artist": r["top_artists"],
            "track_diversity": r["track_diversity_index"],
            "run_id": r["run_id"],
            "loaded_at": r["loaded_at"],
        }
        for r in sorted(hourly_rows, key=lambda r: (r["kpi_date"], r["stream_hour"]))
    ]
    per_day: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in hourly_rows:
        per_day[r["kpi_date"]].append(r)
    assert plays == [
        {
            "play_date": day,
            "plays": sum(r["listen_count"] for r in rows),
            "hours_with_plays": len(rows),
            "loaded_at": max(r["loaded_at"] for r in rows),
        }
        for day, rows in sorted(per_day.items())
    ]
    # each play once a day: the summary's valid plays, all dates being new
    assert sum(day["plays"] for day in plays) == execution.output["plays_valid"]
