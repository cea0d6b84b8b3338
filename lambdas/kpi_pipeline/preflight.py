"""The preflight: ``{"preflight": true}`` proves a deployment before its first run.

Each step checks, with its own function and role (so with its own IAM grants and, in the
warehouse, its own database user), what it will need; nothing is kept: no KPI row is
written, no file moved, the warehouse work happens in temporary tables. Every check says
what it found and, when it fails, what to fix. Archive gathers the checks into one document
(``runs/<run>/preflight.json``) and the execution's output.

The warehouse checks run the spec's worked example (docs/kpis.md) through both engines: the
Lambda engine (DuckDB, in Transform) writes the example's inputs as the pipeline's own
writers write them, and its KPI rows; the warehouse engine (TransformInWarehouse) COPYs
those inputs through the COPY role and computes the same rows in SQL; Load COPYs the Lambda
engine's part as it would load it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpi_pipeline.contracts import (
    PreflightCheck,
    PreflightReport,
    PreflightReportRequest,
    PreflightResult,
)
from kpi_pipeline.layout import Layout, run_key
from kpi_pipeline.lock import read_lock_item
from kpi_pipeline.storage import Storage

ATTEMPT = "preflight"  # the attempt folder a preflight writes its warehouse inputs under
FIXTURE_DATE = dt.date(2024, 6, 25)
# docs/kpis.md's worked example: users 1 and 2; track A in pop and dance (artists X;Y), B in pop.
FIXTURE_SONGS = (
    ("1", "A", "X;Y", "Song A", "80", "180000", "pop"),
    ("2", "A", "X;Y", "Song A", "80", "180000", "dance"),
    ("3", "B", "Y", "Song B", "40", "240000", "pop"),
)
FIXTURE_PLAYS = (
    (1, "A", "2024-06-25 10:05:00"),
    (2, "A", "2024-06-25 10:20:00"),
    (1, "B", "2024-06-25 10:40:00"),
    (1, "B", "2024-06-25 10:40:00"),  # a duplicate: one play
)
# What docs/kpis.md's worked example says those plays give (the columns it names).
WORKED_EXAMPLE: list[dict[str, Any]] = [
    {
        "kpi_type": "genre",
        "track_genre": "dance",
        "listen_count": 2,
        "avg_track_duration_sec": 180.0,
        "popularity_index": 100 * (0.5 * 2 / 3 + 0.5 * 80 / 100),
        "most_popular_track_id": "A",
    },
    {
        "kpi_type": "genre",
        "track_genre": "pop",
        "listen_count": 3,
        "avg_track_duration_sec": 210.0,
        "popularity_index": 100 * (0.5 * 1 + 0.5 * (80 + 80 + 40) / 3 / 100),
        "most_popular_track_id": "A",
    },
    {
        "kpi_type": "hourly",
        "stream_hour": 10,
        "listen_count": 3,
        "unique_listeners": 2,
        "top_artists": "Y",
        "track_diversity_index": 2 / 3,
    },
]
FIX_GRANTS = "run `make warehouse-sql ENV=<env>` as the warehouse's administrator"


@dataclass
class Checks:
    """The checks of one step, each recorded whatever happens inside it."""

    step: str
    found: list[PreflightCheck] = field(default_factory=list)

    @contextlib.contextmanager
    def check(self, what: str, fix: str) -> Iterator[dict[str, Any]]:
        """Run the block as one check: it sets ``detail`` (and ``ok`` False on a finding);
        an exception fails the check with its message."""
        outcome: dict[str, Any] = {"ok": True, "detail": "", "fix": fix}
        try:
            yield outcome
        except Exception as exc:  # a check reports, it never fails the preflight itself
            outcome.update(ok=False, detail=f"{type(exc).__name__}: {exc}"[:1500])
        self.found.append(
            PreflightCheck(
                check=what,
                step=self.step,
                ok=bool(outcome["ok"]),
                detail=str(outcome["detail"]),
                fix="" if outcome["ok"] else str(outcome["fix"]),
            )
        )

    def result(self) -> PreflightResult:
        return PreflightResult(checks=self.found)


# --- the source -------------------------------------------------------------------------------


def source(settings: Any, step: str) -> PreflightResult:
    """CheckSourceData: the source reachable over TLS as configured, both tables with the
    columns the spec names, the change columns timestamps and indexed."""
    from kpi_pipeline.source import SourceDatabase, connection_params

    checks = Checks(step)
    facts: dict[str, Any] = {}
    with checks.check(
        "source: reachable with the secret's credentials",
        "check source.host and source.port, that the RDS security group lets the functions' "
        "security group in (PostgreSQL's port), and the secret's username and password",
    ) as outcome:
        facts = SourceDatabase(connection_params(settings)).describe(
            {
                "users": settings.source_users_changed_column,
                "songs": settings.source_songs_changed_column,
            }
        )
        outcome["detail"] = f"PostgreSQL {facts['server_version']} at {facts['database']}"
    if not facts:
        return checks.result()
    with checks.check(
        f"source: TLS as configured (sslmode {settings.source_sslmode})",
        "RDS serves TLS by default: set source.sslmode to 'verify-full' with the RDS CA bundle",
    ) as outcome:
        tls = facts["tls"]
        outcome["ok"] = bool(tls) or settings.source_sslmode == "disable"
        outcome["detail"] = f"encrypted ({tls})" if tls else "NOT encrypted"
    if any(columns.get("changed_column") for columns in facts["tables"].values()):
        with checks.check(
            "source: its user sees when other sessions' transactions began (incremental reads)",
            f"GRANT pg_read_all_stats TO {facts['user']} (in RDS, as the master user), on the "
            "primary (a replica shows none of its transactions): an incremental read caps its "
            "watermark at the oldest open transaction; or unset source.<table>.changed_column "
            "to read whole",
        ) as outcome:
            outcome["ok"] = facts["sees_all_sessions"] and not facts["replica"]
            outcome["detail"] = f"as {facts['user']}: " + (
                "a replica"
                if facts["replica"]
                else "member of pg_read_all_stats"
                if facts["sees_all_sessions"]
                else "cannot"
            )
    for table, columns in facts["tables"].items():
        with checks.check(
            f"source: table {table} has the columns the KPI spec names",
            f"the source's {table} table must have every column of docs/kpis.md's inputs",
        ) as outcome:
            missing = columns["missing"]
            outcome["ok"] = columns["exists"] and not missing
            outcome["detail"] = (
                "no such table"
                if not columns["exists"]
                else f"lacks {', '.join(missing)}"
                if missing
                else f"{len(columns['present'])} columns, every one the spec names"
            )
        changed = columns.get("changed_column")
        if changed:
            with checks.check(
                f"source: {table}.{changed['name']} is a timestamp, set on every change, "
                "and indexed",
                f"index {table}.{changed['name']} (CREATE INDEX ON {table} ({changed['name']})), "
                "or each incremental read scans the whole table",
            ) as outcome:
                outcome["ok"] = changed["type_ok"] and changed["indexed"]
                outcome["detail"] = f"{changed['type'] or 'missing'}, " + (
                    "indexed" if changed["indexed"] else "NOT indexed"
                )
    return checks.result()


# --- the landing bucket ---------------------------------------------------------------------


def landing_listing(storage: Storage, layout: Layout, step: str) -> PreflightResult:
    checks = Checks(step)
    where = f"s3://{layout.landing_bucket}/{layout.landing_prefix}"
    with checks.check(
        f"landing: {where} can be listed",
        "check landing.bucket_name and landing.prefix; a bucket in another account must allow "
        "the pipeline's roles (make landing-policy ENV=<env>)",
    ) as outcome:
        first = next(iter(storage.list_objects(layout.landing_bucket, layout.landing_prefix)), None)
        outcome["detail"] = f"listed; first file {first.key}" if first else "listed; no file yet"
    return checks.result()


def landing_reading(
    storage: Storage, layout: Layout, step: str, lock_table: str | None = None
) -> PreflightResult:
    """IngestFile: a landing file can be read, and the run lock too. In AWS it reaches both
    through the VPC (a security group letting out HTTPS to S3 and DynamoDB only): a timeout
    here means the private subnets have no route to one of them."""
    checks = Checks(step)
    no_route = (
        "; a timeout means no route from the VPC: a gateway endpoint for it on the private "
        "subnets' route tables (docs/deploy.md, The network)"
    )
    with checks.check(
        f"landing: a file under s3://{layout.landing_bucket}/{layout.landing_prefix} can be "
        "read (and decrypted)",
        "grant the landing bucket's KMS key to the pipeline's roles (landing.kms_key_arn), "
        "or let its owner allow them (make landing-policy ENV=<env>)" + no_route,
    ) as outcome:
        first = next(iter(storage.list_objects(layout.landing_bucket, layout.landing_prefix)), None)
        if first is None:
            outcome["detail"] = "no file in landing yet: nothing to read (listing works)"
        else:
            storage.read_head(layout.landing_bucket, first.key)
            outcome["detail"] = f"read the first byte of {first.key}"
    if lock_table:
        with checks.check(
            "lock: the run lock can be read (DynamoDB reached)",
            "check the function's grant on the lock table" + no_route,
        ) as outcome:
            read_lock_item(lock_table)
            outcome["detail"] = f"read the run lock in {lock_table}"
    return checks.result()


# --- the Lambda engine: the worked example, written and computed as a run would -----------


def lambda_engine(
    run_id: str, storage: Storage, layout: Layout, work: Path, step: str
) -> PreflightResult:
    """Transform: write the example's inputs as extract and ingest write theirs, compute
    its KPIs with DuckDB, and write them as a KPI part (what Load COPYs) and as rows (what
    the warehouse engine must equal)."""
    checks = Checks(step)
    rows: list[dict[str, Any]] = []
    with checks.check(
        "Lambda engine: the worked example's KPIs (DuckDB), inputs and KPI part written",
        "see the error: the Transform function's layers, memory or role",
    ) as outcome:
        rows = _compute_example(run_id, storage, layout, work)
        outcome["detail"] = f"{len(rows)} KPI rows written for the warehouse to match"
    if rows:
        with checks.check(
            "Lambda engine: the worked example gives docs/kpis.md's numbers",
            "the deployed code computes other KPIs than the spec: deploy a tested version",
        ) as outcome:
            differences = _differences(WORKED_EXAMPLE, rows)
            outcome["ok"] = not differences
            outcome["detail"] = (
                "pop 3 plays (83.33), dance 2 (73.33), hour 10: 3 plays, 2 listeners, Y"
                if not differences
                else f"differs from docs/kpis.md: {differences[:3]}"
            )
    return checks.result()


def _compute_example(
    run_id: str, storage: Storage, layout: Layout, work: Path
) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from kpi_pipeline import engine
    from kpi_pipeline.extract import SNAPSHOT_QUERIES, stage_source_tables
    from kpi_pipeline.ingest import copy_plays
    from kpi_pipeline.kpis import run_example_models
    from kpi_pipeline.settings import EngineSettings
    from kpi_pipeline.source import SOURCE_COLUMNS
    from kpi_pipeline.warehouse.arrow import fit_to_schema
    from kpi_pipeline.warehouse.copy_parquet import DUCKDB_PARQUET, WRITE_CODEC

    work.mkdir(parents=True, exist_ok=True)
    con = engine.connect(EngineSettings(), work)
    try:
        named = ("id", "track_id", "artists", "track_name", "popularity", "duration_ms")
        values = ", ".join(
            "(" + ", ".join(engine.literal(v) for v in song) + ")" for song in FIXTURE_SONGS
        )
        con.execute(
            f"CREATE TEMP TABLE example_songs AS SELECT * FROM (VALUES {values}) "
            f"AS t ({', '.join(named)}, track_genre)"
        )
        # The raw tables as extract leaves them: every spec column, as text.
        for table, source in (("songs", "example_songs"), ("users", "example_users")):
            if table == "users":
                con.execute(
                    "CREATE TEMP TABLE example_users AS "
                    "SELECT * FROM (VALUES ('1'), ('2')) AS t (user_id)"
                )
            present = {"songs": (*named, "track_genre"), "users": ("user_id",)}[table]
            columns = ", ".join(
                f"CAST({c} AS VARCHAR) AS {c}" if c in present else f"CAST(NULL AS VARCHAR) AS {c}"
                for c in SOURCE_COLUMNS[table]
            )
            con.execute(f"CREATE TEMP TABLE raw_{table} AS SELECT {columns} FROM {source}")
        stage_source_tables(con)
        paths = {table: work / f"{table}.parquet" for table in ("songs", "song_tracks")}
        paths["song_artists"] = work / "song_artists.parquet"
        for table, path in paths.items():
            con.execute(
                f"COPY ({SNAPSHOT_QUERIES[table]}) TO {engine.literal(path)} {DUCKDB_PARQUET}"
            )
        con.execute(
            "CREATE TEMP TABLE example_plays AS SELECT user_id, track_id, "
            "CAST(listen_time AS TIMESTAMP) AS listen_time, "
            "CAST(CAST(listen_time AS TIMESTAMP) AS DATE) AS kpi_date FROM (VALUES "
            + ", ".join(f"({u}, '{t}', '{time}')" for u, t, time in FIXTURE_PLAYS)
            + ") AS t (user_id, track_id, listen_time)"
        )
        plays = work / "wh_curated_plays.parquet"
        copy_plays(con, "SELECT * FROM example_plays", [], "preflight", plays)
    finally:
        con.close()
    kpis = run_example_models(work, paths["songs"], paths["song_artists"], plays, run_id)
    part = work / "part.parquet"
    pq.write_table(fit_to_schema(kpis), part, compression=WRITE_CODEC)

    prefix = layout.transform_prefix(run_id, ATTEMPT)
    uploads = {
        plays: f"{prefix}inputs/wh_curated_plays.parquet",
        paths["song_tracks"]: f"{prefix}inputs/wh_songs.parquet",
        paths["song_artists"]: f"{prefix}inputs/wh_song_artists.parquet",
        part: layout.kpi_part_key(layout.kpi_prefix(run_id, ATTEMPT), FIXTURE_DATE),
    }
    for path, key in uploads.items():
        storage.upload_file(path, layout.data_bucket, key)
    rows = [_plain(row) for row in fit_to_schema(kpis).to_pylist()]
    storage.put_json(layout.data_bucket, f"{prefix}expected.json", rows)
    return rows


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}


# --- the warehouse, as each of its two steps ---------------------------------------------------


def warehouse_engine(
    run_id: str, warehouse: Any, table: str, storage: Storage, layout: Layout, step: str
) -> PreflightResult:
    """TransformInWarehouse: its privileges, the database's collation, COPY of each input
    through the COPY role, and the warehouse KPI SQL giving the Lambda engine's rows."""
    from kpi_pipeline.warehouse import DateJob
    from kpi_pipeline.warehouse.kpi_sql import INPUT_TABLES
    from kpi_pipeline.warehouse.schema import stage_table
    from kpi_pipeline.warehouse_transform import copy_manifest

    checks = Checks(step)
    stage = stage_table(table)
    with checks.check(
        f"warehouse: {step} may create temporary tables and add rows to {stage}",
        FIX_GRANTS,
    ) as outcome:
        found = warehouse.values(
            {
                "database_user": "current_user",
                "temp": "has_database_privilege(current_database(), 'TEMP')",
                "stage_insert": f"has_table_privilege('{stage}', 'INSERT')",
            }
        )
        missing = [name for name in ("temp", "stage_insert") if not found[name]]
        outcome["ok"] = not missing
        outcome["detail"] = f"as {found['database_user']}: " + (
            f"lacks {', '.join(missing)}" if missing else "TEMP, INSERT granted"
        )
    with checks.check(
        "warehouse: the database compares strings case-sensitively",
        "the KPIs group track ids and artists byte by byte: use a database created with "
        "COLLATE CASE_SENSITIVE (Redshift's default)",
    ) as outcome:
        collation = warehouse.values({"collation": "db_collation()"})["collation"]
        outcome["ok"] = collation == "case_sensitive"
        outcome["detail"] = f"db_collation() is {collation}"

    prefix = layout.transform_prefix(run_id, ATTEMPT)
    expected = storage.get_json(layout.data_bucket, f"{prefix}expected.json") or []
    if not expected:
        with checks.check(
            "warehouse engine: COPY of each input through the COPY role, the KPI SQL giving "
            "the Lambda engine's rows",
            "fix the Lambda engine's check first (Transform): its example is this one's input",
        ) as outcome:
            outcome["ok"] = False
            outcome["detail"] = "not run: the Lambda engine wrote no example to compare with"
        return checks.result()
    manifests = {}
    for input_table in INPUT_TABLES:
        key = f"{prefix}inputs/{input_table}.parquet"
        size = storage.size(layout.data_bucket, key)
        manifest_key = f"{prefix}manifests/{input_table}.manifest"
        storage.put_json(
            layout.data_bucket, manifest_key, copy_manifest(layout.data_bucket, {key: size or 0})
        )
        manifests[input_table] = manifest_key
    job = DateJob(FIXTURE_DATE, run_id, layout.data_bucket, manifests, "0" * 12, "0" * 32)
    with checks.check(
        "warehouse engine: COPY of each input through the COPY role, the KPI SQL giving the "
        "Lambda engine's rows",
        "a COPY error: attach the COPY role to the cluster or namespace and grant it "
        f"ASSUMEROLE ({FIX_GRANTS}); a SQL error: the statement named is refused by Redshift",
    ) as outcome:
        rows = warehouse.preflight_compute(job)
        differences = _differences(expected, rows)
        outcome["ok"] = not differences and bool(expected)
        outcome["detail"] = (
            f"{len(rows)} rows, equal to the Lambda engine's"
            if outcome["ok"]
            else f"rows differ from the Lambda engine's: {differences[:3]}"
        )
    return checks.result()


def load(
    run_id: str, warehouse: Any, table: str, storage: Storage, layout: Layout, step: str
) -> PreflightResult:
    """Load: its privileges on the KPI table and the stage table, and COPY of a KPI part
    through the COPY role (counted, never loaded)."""
    from kpi_pipeline.warehouse import KpiBatch
    from kpi_pipeline.warehouse.schema import fence_table, stage_table

    checks = Checks(step)
    stage = stage_table(table)
    wanted = {
        "temp": "has_database_privilege(current_database(), 'TEMP')",
        **{
            f"{name}_{privilege.lower()}": f"has_table_privilege('{target}', '{privilege}')"
            for name, target, privileges in (
                ("table", table, ("SELECT", "INSERT", "DELETE")),
                ("stage", stage, ("SELECT", "DELETE")),
                ("fence", fence_table(table), ("SELECT", "UPDATE")),
            )
            for privilege in privileges
        },
    }
    with checks.check(
        f"warehouse: {step} may replace dates in {table} and clear {stage}", FIX_GRANTS
    ) as outcome:
        found = warehouse.values({"database_user": "current_user", **wanted})
        missing = [name for name in wanted if not found[name]]
        outcome["ok"] = not missing
        outcome["detail"] = f"as {found['database_user']}: " + (
            f"lacks {', '.join(missing)}" if missing else "every privilege it needs"
        )
    expected = storage.get_json(
        layout.data_bucket, f"{layout.transform_prefix(run_id, ATTEMPT)}expected.json"
    )
    with checks.check(
        "warehouse: the load's COPY of a KPI part through the COPY role",
        "attach the COPY role to the cluster or namespace, and let it list and read the "
        f"data bucket's kpis/ prefix ({FIX_GRANTS} for ASSUMEROLE)",
    ) as outcome:
        batch = KpiBatch(layout.data_bucket, layout.kpi_prefix(run_id, ATTEMPT), [FIXTURE_DATE])
        counted = warehouse.preflight_copy_parts(batch)
        outcome["ok"] = counted == len(expected or [])
        outcome["detail"] = f"COPY read {counted} rows of the part's {len(expected or [])}"
    return checks.result()


def _differences(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> list[str]:
    def key(row: dict[str, Any]) -> tuple[str, str, int]:
        return (
            str(row.get("kpi_type")),
            str(row.get("track_genre") or ""),
            int(row.get("stream_hour") or -1),
        )

    wanted = {key(row): row for row in expected}
    got = {key(row): row for row in actual}
    found = [f"{k}: missing" for k in sorted(set(wanted) - set(got))]
    found += [f"{k}: unexpected" for k in sorted(set(got) - set(wanted))]
    for k in sorted(set(wanted) & set(got)):
        for column, value in wanted[k].items():
            other = got[k].get(column)
            if column == "run_id" or _same(value, other):
                continue
            found.append(f"{k} {column}: {other!r}, not {value!r}")
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    return str(a) == str(b)


# --- the report ------------------------------------------------------------------------------


def report(request: PreflightReportRequest, storage: Storage, layout: Layout) -> PreflightReport:
    """Every branch's checks, in one document and the execution's output."""
    checks = [PreflightCheck.model_validate(c) for c in _checks_in(request.results)]
    key = f"runs/{run_key(request.run_id)}/preflight.json"
    passed = bool(checks) and all(c.ok for c in checks)
    failed = [f"{c.check} ({c.step}): {c.detail}" for c in checks if not c.ok]
    summary = f"{len(checks) - len(failed)} of {len(checks)} checks passed" + (
        "; failed: " + "; ".join(failed) if failed else ""
    )
    result = PreflightReport(
        status="preflight_passed" if passed else "preflight_failed",
        run_id=request.run_id,
        checks=checks,
        report_key=key,
        summary=summary[:4000],
    )
    storage.put_json(layout.data_bucket, key, result.model_dump(mode="json"))
    return result


def _checks_in(value: Any) -> Iterator[Any]:
    """Every check in the Parallel state's output (each branch's results, at any depth)."""
    if isinstance(value, dict):
        if isinstance(value.get("checks"), list):
            yield from value["checks"]
        elif "check" in value and "ok" in value:  # a check of the state machine's own
            yield value
        else:
            for item in value.values():
                yield from _checks_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _checks_in(item)
