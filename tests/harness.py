"""A test harness around the local runner's parts: the synthesized state machine on moto,
real PostgreSQL databases for the source and the warehouse."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from local_runner.aws import Execution, LocalAws
from local_runner.databases import (
    apply_warehouse_setup,
    dsn_to_secret,
    replace_source_tables,
    source_reader,
)
from local_runner.sample_data import SampleConfig
from tests.reference_kpis import Reference

# The end-to-end tests' data: small enough for seconds per run, with every kind of dirt.
SAMPLE_CONFIG = SampleConfig(seed=11, users=120, tracks=300, days=2, plays_per_day=2500)
# Its two full days (about 2,500 plays each) pass this, the few plays of the day before
# (about 25) do not: with transform.engine "auto", both engines compute dates of one run
# (so do the crash matrix's days of 300 and 200 plays and its late play).
WAREHOUSE_MIN_PLAYS = 100


@dataclass
class Harness:
    local: LocalAws
    source_dsn: str
    warehouse_dsn: str
    work: Path
    runs: int = 0

    @property
    def env(self) -> dict[str, str]:
        return self.local.pipeline.environment()

    @property
    def landing(self) -> tuple[str, str]:
        return self.env["LANDING_BUCKET"], self.env["LANDING_PREFIX"]

    @property
    def data_bucket(self) -> str:
        return self.env["DATA_BUCKET"]

    def load_source(self, users_csv: Path, songs_csv: Path) -> dict[str, int]:
        return replace_source_tables(self.source_dsn, users_csv, songs_csv)

    def drop_source_column(self, table: str, column: str) -> None:
        """Break the source as a schema change would: the column the pipeline needs is gone."""
        conn = psycopg2.connect(self.source_dsn)
        with conn, conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.close()

    def put_streams(self, *files: Path, as_names: list[str] | None = None) -> list[str]:
        bucket, prefix = self.landing
        if as_names:
            renamed = []
            for path, name in zip(files, as_names, strict=True):
                target = self.work / "renamed" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                renamed.append(target)
            files = tuple(renamed)
        return self.local.put_files(bucket, prefix, list(files))

    def wrap_handler(self, suffix: str, wrapper: Any) -> None:
        """Replace the handler whose name ends with ``suffix`` by ``wrapper(real_handler)``."""
        handlers = self.local._handlers
        (name,) = [n for n, (f, _) in handlers.items() if f.handler.endswith(suffix)]
        function, real = handlers[name]
        handlers[name] = (function, wrapper(real))

    def hold(self, suffix: str, run_id: str) -> tuple[threading.Event, threading.Event]:
        """Stop ``run_id`` on entering the handler ending with ``suffix`` until released.

        Returns (entered, release): wait for the first, set the second to let it go on.
        """
        entered, release = threading.Event(), threading.Event()

        def wrap(handler: Any) -> Any:
            def held(event: dict[str, Any], context: Any) -> Any:
                if event.get("run_id") == run_id:
                    entered.set()
                    assert release.wait(timeout=120), f"{run_id} was never released"
                return handler(event, context)

            return held

        self.wrap_handler(suffix, wrap)
        return entered, release

    @staticmethod
    def wait_until(condition: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting"
            time.sleep(0.05)

    def run(self, run_id: str | None = None, run_input: dict[str, Any] | None = None) -> Execution:
        self.runs += 1
        return self.local.run(run_id or f"test-run-{self.runs}", run_input)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        s3 = self.local.client("s3")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def warehouse(self) -> list[dict[str, Any]]:
        conn = psycopg2.connect(self.warehouse_dsn)
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute("SELECT to_regclass('music_kpi_metrics') IS NOT NULL AS present")
                if not cur.fetchone()["present"]:
                    return []
                cur.execute(
                    "SELECT * FROM music_kpi_metrics ORDER BY kpi_date, kpi_type, "
                    "track_genre NULLS FIRST, stream_hour NULLS FIRST"
                )
                return [dict(row) for row in cur.fetchall()]
        finally:
            conn.close()


# Every (principal, action, resource) the local IAM check allowed in this session's runs,
# and the largest state payload measured (size, event, state, field) with the count.
IAM_VERIFIED: set[tuple[str, str, str]] = set()
PAYLOADS: dict[str, Any] = {"measured": 0, "largest": [0, "", "", ""]}


@contextlib.contextmanager
def running_harness(
    pipeline: Any,
    new_database: Any,
    tmp_path: Path,
    edit_setup: Callable[[str], str] | None = None,
    **options: Any,
) -> Iterator[Harness]:
    """The harness with moto running; on the way out, no call may have been denied.
    ``edit_setup`` changes the warehouse setup SQL before the administrator runs it."""
    source, warehouse = new_database("source"), new_database("warehouse")
    apply_warehouse_setup(warehouse, edit_setup)
    local = LocalAws(
        pipeline,
        overrides={"WAREHOUSE_DSN": warehouse, "WORK_DIR": str(tmp_path / "lambda-tmp")},
        secrets={pipeline.environment()["SOURCE_SECRET_ARN"]: dsn_to_secret(source_reader(source))},
        **options,
    )
    with local:
        yield Harness(local, source, warehouse, tmp_path)
    IAM_VERIFIED.update(local.iam.verified)
    PAYLOADS["measured"] += local.payloads.measured
    if local.payloads.largest and local.payloads.largest.size > PAYLOADS["largest"][0]:
        largest = local.payloads.largest
        PAYLOADS["largest"] = [largest.size, largest.event, largest.state, largest.field]
    denied = [str(v) for v in local.iam.violations]
    assert not denied, "calls the synthesized IAM policies do not allow:\n" + "\n".join(denied)
    too_large = local.payloads.describe()
    assert not too_large, "payloads Step Functions would refuse:\n" + "\n".join(too_large)


GENRE_KEYS = ("kpi_date", "track_genre")
HOURLY_KEYS = ("kpi_date", "stream_hour")
EXACT = {
    "genre": ("listen_count", "most_popular_track", "most_popular_track_id"),
    "hourly": ("listen_count", "unique_listeners", "top_artists"),
}
APPROX = {
    "genre": ("avg_track_duration_sec", "popularity_index"),
    "hourly": ("track_diversity_index",),
}


def assert_matches_reference(
    rows: list[dict[str, Any]], reference: Reference, dates: set[dt.date] | None = None
) -> None:
    """The warehouse holds exactly the reference's KPI rows (floats to 1e-9 relative)."""
    for kind, keys, expected_rows in (
        ("genre", GENRE_KEYS, reference.genre_rows),
        ("hourly", HOURLY_KEYS, reference.hourly_rows),
    ):
        of_kind = [r for r in rows if r["kpi_type"] == kind]
        actual = {tuple(r[k] for k in keys): r for r in of_kind}
        if dates is None:  # each key once: a date loaded twice is no reference
            assert len(of_kind) == len(actual), f"{kind} rows repeated"
        expected = {
            tuple(r[k] for k in keys): r
            for r in expected_rows
            if dates is None or r["kpi_date"] in dates
        }
        if dates is not None:
            actual = {key: r for key, r in actual.items() if key[0] in dates}
        assert sorted(actual) == sorted(expected), f"{kind} rows differ"
        for key, want in expected.items():
            got = actual[key]
            for column in EXACT[kind]:
                assert got[column] == want[column], (kind, key, column)
            for column in APPROX[kind]:
                assert got[column] == pytest.approx(want[column], rel=1e-9), (kind, key, column)


def stage_rows(dsn: str) -> list[tuple[Any, ...]]:
    """The warehouse engine's stage rows left in a warehouse: (kpi_date, attempt, rows)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT kpi_date, attempt, count(*) FROM music_kpi_metrics_stage "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            )
            return [tuple(row) for row in cur.fetchall()]
    finally:
        conn.close()
