"""Where the report's data comes from: the warehouse table and the run summaries.

The warehouse (``--dsn``) is one of:

- nothing: the local warehouse ``make run`` keeps in STATE (its embedded PostgreSQL, or
  ``$WAREHOUSE_DSN`` when ``$WAREHOUSE_DSN`` and ``$RDS_DSN`` are both set, as for
  ``make run``), read while holding STATE so that no run changes it meanwhile;
- ``postgresql://user:password@host:5432/database`` (or any libpq DSN): any PostgreSQL;
- ``redshift://<name>/<database>[?cluster=1][&db_user=U][&secret_arn=ARN][&region=R]``:
  Redshift through the Data API. ``<name>`` is a Serverless workgroup, or with
  ``cluster=1`` a provisioned cluster, which needs ``db_user`` (temporary credentials) or
  ``secret_arn`` (a Secrets Manager secret; a workgroup may use one too). Credentials and
  the region otherwise come from boto3's usual chain.

The run summaries (``--summaries``, else ``$REPORT_SUMMARIES``) are the pipeline's
``runs/<run>/summary.json`` documents under one of:

- ``s3://<data bucket>[/prefix]``: read with boto3 (how a report on Redshift gets them);
- a folder holding ``runs/<run>/summary.json``;
- nothing: STATE's saved snapshot, in its data bucket (the folder of ``saved/<snapshot>/s3``
  whose name contains ``databucket``), when STATE exists; else the report has no runs.

Every reader returns plain data (dicts): :mod:`reporting.page` renders it, knowing nothing
of where it came from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql as pgsql

from kpi_pipeline.layout import run_key
from kpi_pipeline.warehouse.postgres import unencoded_at
from kpi_pipeline.warehouse.schema import TABLE_COLUMNS
from local_runner.databases import local_databases
from local_runner.state import StateFolder, StateInUse

KpiRow = dict[str, Any]
Summary = dict[str, Any]

DEFAULT_TABLE = "music_kpi_metrics"
# The table's columns, in the warehouse schema's order: what the report reads.
COLUMNS: tuple[str, ...] = tuple(column.name for column in TABLE_COLUMNS)
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class ReportError(RuntimeError):
    """The report cannot be made from these sources (exit 1)."""


class UsageError(ValueError):
    """The arguments name no usable source (exit 2, as argparse's own errors)."""


class KpiReader(Protocol):
    """A warehouse: all rows of the KPI table, as dicts of :data:`COLUMNS`."""

    def read_kpis(self) -> list[KpiRow]: ...


def check_table(table: str) -> str:
    """The table name goes into SQL text (Redshift's Data API has no identifiers)."""
    if not _TABLE_NAME.match(table):
        raise UsageError(f"--table must be a table name like 'analytics.kpis', not {table!r}")
    return table


def select_sql(table: str) -> str:
    """The one query of every reader: dates in order, genre rows before hourly ones."""
    return (
        f"SELECT {', '.join(COLUMNS)} FROM {check_table(table)} "
        "ORDER BY kpi_date, kpi_type, track_genre, stream_hour"
    )


# What a shown DSN never holds: the password, and the client key's.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def mask_dsn(dsn: str) -> str:
    """The DSN as it may be printed: a PostgreSQL DSN (URI or keywords) rebuilt from the
    parameters the driver reads in it, without its passwords (so no spelling of a key or a
    value, percent-encoded or escaped, can carry one through); a ``redshift://`` one as is
    (it holds none)."""
    if dsn.startswith("redshift://"):  # its credentials are boto3's: user info is dropped
        parts = urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=host))
    from psycopg2.extensions import make_dsn, parse_dsn

    if unencoded_at(dsn):
        return "(a DSN with an unencoded '@' in its user info: write it %40)"
    try:
        parsed = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "(a DSN that does not parse)"
    first = ("host", "port", "dbname", "user")
    order = [*(k for k in first if k in parsed), *sorted(set(parsed) - set(first))]
    return make_dsn(**{k: parsed[k] for k in order if k not in SECRET_PARAMETERS})


def redact(text: str, dsn: str | None) -> str:
    """``text`` (an error message) with the DSN's password removed, wherever it appears."""
    if not dsn:
        return text
    text = text.replace(dsn, mask_dsn(dsn))
    for secret in _secrets_of(dsn):
        text = text.replace(secret, "***")
    return text


def _secrets_of(dsn: str) -> list[str]:
    """The DSN's password and its client key's (sslpassword), as the driver decodes them;
    with an unencoded '@' in the user info, each part of it too (the driver would quote the
    password's tail as a host name)."""
    user_info = unencoded_at(dsn)
    if user_info:
        password = user_info.partition(":")[2]
        pieces = re.split(r"[@/?#]", password) if password else []
        return [part for part in (password, *pieces) if len(part) > 1]
    with contextlib.suppress(psycopg2.ProgrammingError):
        from psycopg2.extensions import parse_dsn

        parsed = parse_dsn(dsn)
        return [v for k, v in parsed.items() if k in SECRET_PARAMETERS and v]
    return []


# --- PostgreSQL ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresReader:
    """Any PostgreSQL holding the KPI table (the local warehouse is one)."""

    dsn: str
    table: str = DEFAULT_TABLE

    def read_kpis(self) -> list[KpiRow]:
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=10)
        except psycopg2.Error as exc:
            raise ReportError(
                f"cannot connect to {mask_dsn(self.dsn)}: {redact(str(exc), self.dsn)}".strip()
            ) from None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table,))
                found = cur.fetchone()
                if not (found and found[0]):
                    return []  # no run has loaded anything yet: an empty warehouse
                cur.execute(pgsql.SQL(select_sql(self.table)))
                return [_normalized(dict(zip(COLUMNS, row, strict=True))) for row in cur]
        finally:
            conn.close()


def _normalized(row: KpiRow) -> KpiRow:
    """Dates and timestamps as ISO text, numbers as int/float: the same from every reader."""
    for name in ("kpi_date", "loaded_at"):
        value = row.get(name)
        if isinstance(value, dt.date | dt.datetime):
            row[name] = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
    for name in ("avg_track_duration_sec", "popularity_index", "track_diversity_index"):
        if row.get(name) is not None:
            row[name] = float(row[name])
    return row


# --- Redshift Data API -----------------------------------------------------------------------


@dataclass(frozen=True)
class RedshiftTarget:
    """Where a Data API statement runs: the parameters every call repeats."""

    database: str
    workgroup: str | None = None
    cluster: str | None = None
    db_user: str | None = None
    secret_arn: str | None = None
    region: str | None = None

    def parameters(self) -> dict[str, str]:
        found: dict[str, str] = {"Database": self.database}
        if self.workgroup:
            found["WorkgroupName"] = self.workgroup
        if self.cluster:
            found["ClusterIdentifier"] = self.cluster
        if self.secret_arn:
            found["SecretArn"] = self.secret_arn
        elif self.db_user:
            found["DbUser"] = self.db_user
        return found


_REDSHIFT_OPTIONS = {"cluster", "db_user", "secret_arn", "region"}


def parse_redshift_dsn(dsn: str) -> RedshiftTarget:
    """``redshift://<workgroup-or-cluster>/<database>?...`` (see the module docstring)."""
    parts = urlsplit(dsn)
    name, database = unquote(parts.hostname or ""), unquote(parts.path.strip("/"))
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = sorted(set(options) - _REDSHIFT_OPTIONS)
    if not name or not database or "/" in database or unknown:
        raise UsageError(
            "a Redshift DSN is redshift://<workgroup-or-cluster>/<database>"
            "[?cluster=1][&db_user=U][&secret_arn=ARN][&region=R]"
            + (f" (unknown option: {', '.join(unknown)})" if unknown else "")
        )
    is_cluster = options.get("cluster", "").lower() in {"1", "true", "yes"}
    if is_cluster and not (options.get("db_user") or options.get("secret_arn")):
        raise UsageError("a provisioned cluster needs db_user=... or secret_arn=... in the DSN")
    return RedshiftTarget(
        database=database,
        workgroup=None if is_cluster else name,
        cluster=name if is_cluster else None,
        db_user=options.get("db_user"),
        secret_arn=options.get("secret_arn"),
        region=options.get("region"),
    )


@dataclass
class RedshiftReader:
    """The KPI table in Redshift, read through the Data API: one statement, polled until it
    ends, its result read page by page."""

    target: RedshiftTarget
    client: Any
    table: str = DEFAULT_TABLE
    sleep: Callable[[float], None] = time.sleep
    poll_seconds: float = 0.5
    max_polls: int = 1200  # ten minutes at the default pace

    def read_kpis(self) -> list[KpiRow]:
        statement = self.client.execute_statement(
            Sql=select_sql(self.table), StatementName="music-kpi-report", **self.target.parameters()
        )
        description = self._wait(str(statement["Id"]))
        if not description.get("HasResultSet"):
            return []
        return [
            _normalized(dict(zip(COLUMNS, record, strict=True)))
            for record in self._records(description["Id"])
        ]

    def _wait(self, statement_id: str) -> dict[str, Any]:
        for _ in range(self.max_polls):
            description: dict[str, Any] = self.client.describe_statement(Id=statement_id)
            status = description.get("Status")
            if status == "FINISHED":
                return description
            if status in {"FAILED", "ABORTED"}:
                error = str(description.get("Error", "no error message"))
                if re.search(r'relation "[^"]*" does not exist', error):  # no table yet
                    return {"Id": statement_id, "HasResultSet": False}
                raise ReportError(f"Redshift statement {status.lower()}: {error}")
            self.sleep(self.poll_seconds)
        with contextlib.suppress(Exception):
            self.client.cancel_statement(Id=statement_id)
        raise ReportError(f"Redshift statement {statement_id} still running: cancelled")

    def _records(self, statement_id: str) -> Iterator[list[Any]]:
        token: str | None = None
        while True:
            page = self.client.get_statement_result(
                Id=statement_id, **({"NextToken": token} if token else {})
            )
            for record in page["Records"]:
                yield [field_value(field) for field in record]
            token = page.get("NextToken")
            if not token:
                return


def field_value(field: dict[str, Any]) -> Any:
    """A Data API field as Python: exactly one of its typed members is set."""
    if field.get("isNull"):
        return None
    for member in ("longValue", "doubleValue", "stringValue", "booleanValue"):
        if member in field:
            return field[member]
    return None


def redshift_reader(dsn: str, table: str) -> RedshiftReader:
    import boto3
    from botocore.exceptions import NoRegionError

    target = parse_redshift_dsn(dsn)
    try:
        client = boto3.client(
            "redshift-data", **({"region_name": target.region} if target.region else {})
        )
    except NoRegionError:
        raise UsageError(
            f"no AWS region for {mask_dsn(dsn)}: set AWS_REGION (or AWS_DEFAULT_REGION), "
            "or add ?region=<region> to the DSN"
        ) from None
    return RedshiftReader(target, client, table)


# --- run summaries ---------------------------------------------------------------------------


def parse_summary(text: str | bytes, where: str) -> Summary | None:
    """One summary document, or None (said on stderr) when it is not one: a report of the
    other runs beats no report."""
    try:
        summary = json.loads(text)
    except ValueError:
        summary = None
    if not isinstance(summary, dict) or "run_id" not in summary:
        print(f"warning: {where} is not a run summary: left out", file=sys.stderr)
        return None
    return summary


def merge_runs(documents: list[Summary]) -> list[Summary]:
    """One document per run: its summary, then its outcome over it (a run whose Archive
    wrote the summary and then failed keeps its counts, with the failure's status)."""
    runs: dict[str, Summary] = {}
    for document in documents:
        run_id = str(document["run_id"])
        runs[run_id] = {**runs.get(run_id, {}), **document}
    return list(runs.values())


# A run that failed before Archive has no summary, and the failure document the state
# machine keeps names no kind of run: the records the run left under runs/<run>/ (named in
# kpi_pipeline.layout) tell it, in this order.
RECORD_KINDS = (
    ("replay.json", "replay_quarantine"),
    ("revalidate.json", "revalidate"),
    ("recompute.json", "recompute"),
    ("manifest.json", "daily"),  # ListNewFiles' manifest: only a daily run takes one
)


def with_kind(run: Summary, records: Callable[[str], set[str]]) -> Summary:
    """``run`` with its kind: its own; for a failed run without one, read from the names
    ``records(run folder)`` gives (marked ``kind_from: records``), if any tells."""
    if run.get("kind") or run.get("status") != "failed":
        return run
    names = records(run_key(str(run["run_id"])))
    for record, kind in RECORD_KINDS:
        if record in names:
            return {**run, "kind": kind, "kind_from": "records"}
    return run


def folder_summaries(folder: Path) -> list[Summary]:
    """The runs' summaries and outcomes under ``folder`` (a data bucket's copy on disk)."""
    found = []
    paths = [*sorted(folder.glob("runs/*/summary.json")), *sorted(folder.glob("runs/outcomes/*"))]
    for path in paths:
        summary = parse_summary(path.read_bytes(), str(path))
        if summary is not None:
            found.append(summary)

    def records(run: str) -> set[str]:
        return {p.name for p in (folder / "runs" / run).glob("*") if p.is_file()}

    return [with_kind(run, records) for run in merge_runs(found)]


def s3_summaries(url: str, client: Any) -> list[Summary]:
    """The runs' summaries and outcomes under ``s3://bucket[/prefix]``, page by page."""
    parts = urlsplit(url)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket:
        raise UsageError(f"--summaries {url!r}: expected s3://<bucket>[/prefix]")
    runs = f"{prefix}/runs/" if prefix else "runs/"
    paginator = client.get_paginator("list_objects_v2")

    def read(key: str) -> Summary | None:
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None  # a run that ended before Archive: its outcome tells
        return parse_summary(body, f"s3://{bucket}/{key}")

    # One folder per run (a delimiter listing: never the thousands of per-file results
    # below them), each run's summary read by its key; then every outcome.
    summaries = [
        read(f"{folder['Prefix']}summary.json")
        for page in paginator.paginate(Bucket=bucket, Prefix=runs, Delimiter="/")
        for folder in page.get("CommonPrefixes", [])
        if folder["Prefix"] != f"{runs}outcomes/"
    ]
    outcomes = [
        read(item["Key"])
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{runs}outcomes/")
        for item in page.get("Contents", [])
        if item["Key"].endswith(".json")
    ]

    def records(run: str) -> set[str]:  # the run folder's own objects, not its sub-folders'
        return {
            item["Key"].rpartition("/")[2]
            for page in paginator.paginate(Bucket=bucket, Prefix=f"{runs}{run}/", Delimiter="/")
            for item in page.get("Contents", [])
        }

    merged = merge_runs([s for s in (*summaries, *outcomes) if s is not None])
    return [with_kind(run, records) for run in merged]


def state_data_bucket(state: Path) -> Path | None:
    """The data bucket's folder in STATE's current snapshot (None before any run)."""
    snapshot = StateFolder(state).current()
    if snapshot is None or not snapshot.s3.is_dir():
        return None
    buckets = sorted(p for p in snapshot.s3.iterdir() if "databucket" in p.name.lower())
    if len(buckets) > 1:
        names = ", ".join(p.name for p in buckets)
        raise ReportError(f"several data buckets in {snapshot.s3} ({names}): use --summaries")
    return buckets[0] if buckets else None


# --- putting them together -------------------------------------------------------------------


@dataclass
class Sources:
    """What the report reads, and how its header names it (nothing secret)."""

    kpis: KpiReader
    summaries: Callable[[], list[Summary]]
    warehouse: str
    summaries_from: str


@contextlib.contextmanager
def open_sources(
    dsn: str | None, state: Path, summaries: str | None, table: str = DEFAULT_TABLE
) -> Iterator[Sources]:
    """The warehouse and the summaries, with STATE held whenever one of them is in STATE:
    a report never reads while a ``make run`` writes it."""
    check_table(table)
    summaries = summaries or os.environ.get("REPORT_SUMMARIES") or None
    uses_state = not dsn or (not summaries and state.is_dir())
    if not dsn and not state.is_dir():
        raise UsageError(f"no STATE at {state}: run `make run` first (or give DSN=...)")
    with _holding(state) if uses_state else contextlib.nullcontext():
        read_summaries, summaries_from = _summaries_reader(summaries, state)
        if dsn:
            yield Sources(
                _warehouse_reader(dsn, table), read_summaries, mask_dsn(dsn), summaries_from
            )
            return
        with _local_warehouse(state) as local_dsn:
            yield Sources(
                PostgresReader(local_dsn, table),
                read_summaries,
                f"{mask_dsn(local_dsn)} (STATE={state})",
                summaries_from,
            )


@contextlib.contextmanager
def _holding(state: Path) -> Iterator[None]:
    try:
        with StateFolder(state).in_use():
            yield
    except StateInUse as exc:
        raise ReportError(str(exc)) from None


@contextlib.contextmanager
def _local_warehouse(state: Path) -> Iterator[str]:
    own_servers = os.environ.get("WAREHOUSE_DSN") and os.environ.get("RDS_DSN")
    if not own_servers and not (state / "postgres").is_dir():
        raise UsageError(f"no warehouse in STATE={state}: run `make run` first")
    with local_databases(state) as databases:
        yield databases.warehouse_dsn


def _warehouse_reader(dsn: str, table: str) -> KpiReader:
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme == "redshift":
        return redshift_reader(dsn, table)
    if scheme in {"postgresql", "postgres"} or ("=" in dsn and not scheme):
        return PostgresReader(dsn, table)
    raise UsageError(
        f"--dsn {mask_dsn(dsn)!r}: expected postgresql://... or redshift://<name>/<database>"
    )


def _summaries_reader(
    summaries: str | None, state: Path
) -> tuple[Callable[[], list[Summary]], str]:
    if summaries and summaries.startswith("s3://"):
        import boto3

        url = summaries
        return (lambda: s3_summaries(url, boto3.client("s3"))), url
    if summaries:
        folder = Path(summaries)
        if not folder.is_dir():
            raise UsageError(f"--summaries {summaries!r}: no such folder (or give s3://bucket/)")
        return (lambda: folder_summaries(folder)), str(folder)
    bucket = state_data_bucket(state) if state.is_dir() else None
    if bucket is None:
        return (lambda: []), "no run summaries (no --summaries, no saved STATE)"
    return (lambda: folder_summaries(bucket)), f"{bucket} (STATE's saved snapshot)"
