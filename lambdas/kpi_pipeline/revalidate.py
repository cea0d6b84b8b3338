"""Revalidate: accepted plays checked again against their dates' pins.

A play is valid with the users and songs its date is pinned to (:mod:`kpi_pipeline.catalogue`).
After a source correction (a user deleted, a song replaced under another id) and a
recompute with ``"catalogue": "current"``, which re-pins the dates to today's tables, plays
accepted with the old tables may fail docs/kpis.md's rule 4 now. ``{"revalidate": {"from": ...,
"to": ...}}`` checks every accepted play of those dates with the ingest's own rules
(``ingest/classify_stream_rows.sql``) and moves each that fails, date by date and content
by content, in this order:

1. its rows, as the quarantined rows of a new content ``<content>-revalidated-<date>-<digest
   of the curated object's plays>`` (``quarantine/rows/``: a replay can accept them again,
   should the user come back);
2. that content's pending marker, then its ledger entry (its date, its rows by reason, no
   play): PlanTransform recomputes the date, in this run or, should it fail, the next;
3. the content's curated object of that date, written again without them (one PUT).

The key names the curated object as it is, not the plays failing now: until step 3 a
retry, or a later revalidation after a further correction, writes the same keys again
(with the plays failing then), so a move left half-way is redone, never added to; after
step 3 the object is another, with no play failing. Each play is moved once. The result
counts this run's moves from their ledger entries, so a retry counts what its dead attempt
moved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb

from kpi_pipeline import engine
from kpi_pipeline.catalogue import snapshot_of_dates
from kpi_pipeline.contracts import ReplayRequest, RevalidateResult
from kpi_pipeline.engine import create_view, literal, parquet_list
from kpi_pipeline.ingest import register_snapshots
from kpi_pipeline.kept import download_parquet
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.observability import logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.scratch import open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.streams import download_snapshots
from kpi_pipeline.warehouse import copy_parquet

REVALIDATED_MARK = "-revalidated-"
PLAY_COLUMNS = "user_id, track_id, listen_time, kpi_date, content_key"


def revalidate_plays(
    request: ReplayRequest,
    *,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    scratch: ScratchSettings,
) -> RevalidateResult:
    options = request.request
    assert options.date_from is not None and options.date_to is not None  # CheckRequest's
    days = (options.date_to - options.date_from).days + 1
    dates = [options.date_from + dt.timedelta(days=n) for n in range(days)]
    ledger = Ledger(storage, layout)
    accepted = {d: sizes for d, sizes in ledger.accepted_sizes_by_date(dates).items() if sizes}
    objects = sorted((d, key) for d, sizes in accepted.items() for key in sizes)
    result = RevalidateResult(date_from=options.date_from, date_to=options.date_to)
    if objects:
        with open_scratch(scratch, "revalidate") as space:
            space.reserve(3 * sum(accepted[d][key] for d, key in objects), "the accepted plays")
            paths = _download(storage, layout, objects, space.path)
            con = engine.connect(engine_settings, space.path, spill_limit_mb=space.spill_limit_mb())
            try:
                checked = _check(con, paths, request, sorted(accepted), storage, layout, space)
                _move(con, request, ledger, storage, layout, space.path)
            finally:
                con.close()
            result = result.model_copy(
                update={"contents_checked": len(objects), "plays_checked": checked}
            )
    result = _counted(result, request.run_id, objects, storage, layout)
    document = result.model_dump(mode="json")
    storage.put_json(layout.data_bucket, layout.revalidate_result_key(request.run_id), document)
    logger.info("accepted plays revalidated", extra={"revalidation": document})
    return result


def _download(
    storage: Storage, layout: Layout, objects: list[tuple[dt.date, str]], tmp: Path
) -> list[Path]:
    folder = tmp / "curated"
    folder.mkdir()

    def download(indexed: tuple[int, tuple[dt.date, str]]) -> Path:
        number, (kpi_date, content) = indexed
        path = folder / f"{number}.parquet"
        key = layout.curated_plays_key(kpi_date, content)
        if not download_parquet(storage, layout.data_bucket, key, path, what="curated plays"):
            raise FileNotFoundError(f"curated plays s3://{layout.data_bucket}/{key} are missing")
        return path

    return parallel(download, list(enumerate(objects)))


def _check(
    con: duckdb.DuckDBPyConnection,
    paths: list[Path],
    request: ReplayRequest,
    dates: list[dt.date],
    storage: Storage,
    layout: Layout,
    space: Any,
) -> int:
    """Table ``checked``: every play read, with the reason it fails with now (NULL: valid
    still), judged with its date's pin as the ingest judges a row. Returns the plays read."""
    con.execute(
        f"""
        CREATE TEMP TABLE plays AS
        SELECT row_number() OVER (ORDER BY {PLAY_COLUMNS}) AS record_number, {PLAY_COLUMNS}
        FROM read_parquet({parquet_list(paths)})
        """
    )
    # The curated plays are parsed already: the ingest's parse output, spelled as such.
    con.execute(
        """
        CREATE TEMP VIEW parsed_rows AS
        SELECT record_number, NULL AS raw_user_id, NULL AS raw_track_id,
            NULL AS raw_listen_time, user_id, TRUE AS user_id_is_integer,
            track_id AS track_id_text, listen_time, kpi_date
        FROM plays
        """
    )
    refs = snapshot_of_dates(storage, layout, dates, request.snapshot)
    local = download_snapshots(set(refs.values()), storage, layout, space.path)
    register_snapshots(con, {d: local[ref] for d, ref in refs.items()}, only_named=True)
    create_view(con, "classified_rows", "ingest/classify_stream_rows.sql")
    con.execute(
        """
        CREATE TEMP TABLE checked AS
        SELECT p.*, c.reason
        FROM plays AS p JOIN classified_rows AS c USING (record_number)
        """
    )
    return engine.scalar(con, "SELECT count(*) FROM checked")


def _move(
    con: duckdb.DuckDBPyConnection,
    request: ReplayRequest,
    ledger: Ledger,
    storage: Storage,
    layout: Layout,
    tmp: Path,
) -> None:
    """The plays that fail now, moved to the quarantine one curated object at a time."""
    failing = con.execute(
        "SELECT DISTINCT content_key, kpi_date FROM checked WHERE reason IS NOT NULL ORDER BY ALL"
    ).fetchall()
    entries = ledger.entries(content for content, _ in failing)

    def move(item: tuple[str, dt.date]) -> None:
        content, kpi_date = item
        where = "content_key = ? AND kpi_date = ?"
        plays = con.execute(
            f"SELECT user_id, track_id, listen_time FROM checked WHERE {where} ORDER BY ALL",
            [content, kpi_date],
        ).fetchall()  # the object's every play: its identity until it is rewritten
        digest = hashlib.sha256(repr(plays).encode()).hexdigest()[:16]
        moved_key = f"{content}{REVALIDATED_MARK}{kpi_date.isoformat()}-{digest}"
        source_key = str(entries.get(content, {}).get("source_key", ""))
        rows = tmp / f"{moved_key}.parquet"
        reasons = dict(
            con.execute(
                f"SELECT reason, count(*) FROM checked WHERE {where} AND reason IS NOT NULL "
                "GROUP BY 1 ORDER BY 1",
                [content, kpi_date],
            ).fetchall()
        )
        # 1. The rows, as a quarantine object a replay reads (kpi_pipeline.replay).
        con.execute(
            f"""
            COPY (
                SELECT record_number, CAST(user_id AS VARCHAR) AS user_id, track_id,
                    CAST(listen_time AS VARCHAR) AS listen_time,
                    CAST(NULL AS VARCHAR) AS raw_record, reason,
                    CAST(? AS VARCHAR) AS source_key, CAST(? AS VARCHAR) AS content_key,
                    CAST(? AS VARCHAR) AS run_id
                FROM checked WHERE {where} AND reason IS NOT NULL ORDER BY record_number
            ) TO {literal(rows)} (FORMAT parquet, COMPRESSION zstd)
            """,
            [source_key, moved_key, request.run_id, content, kpi_date],
        )
        storage.upload_file(rows, layout.data_bucket, layout.quarantine_rows_key(moved_key))
        # 2. Its date recomputed: the marker, then the entry (only if absent).
        day = kpi_date.isoformat()
        marker = {"content_key": moved_key, "run_id": request.run_id, "kpi_dates": [day]}
        storage.put_json(layout.data_bucket, layout.pending_key(moved_key), marker)
        entry = {
            "content_key": moved_key,
            "revalidation_of": content,
            "source_key": source_key,
            "run_id": request.run_id,
            "ingested_at": dt.datetime.now(dt.UTC).isoformat(),
            "kpi_dates": [day],
            "plays_valid": 0,
            "plays_by_date": {},
            "duplicates": 0,
            "rows_quarantined": {str(r): int(n) for r, n in reasons.items()},
            "copy_format": copy_parquet.COPY_FORMAT,
        }
        # Overwritten, not kept: until the object is rewritten, the latest check decides.
        storage.put_json(layout.data_bucket, layout.ledger_key(moved_key), entry)
        # 3. The curated object without them.
        kept = tmp / f"{moved_key}.kept.parquet"
        con.execute(
            f"COPY (SELECT {PLAY_COLUMNS} FROM checked WHERE {where} AND reason IS NULL "
            f"ORDER BY record_number) TO {literal(kept)} {copy_parquet.DUCKDB_PARQUET}",
            [content, kpi_date],
        )
        storage.upload_file(kept, layout.data_bucket, layout.curated_plays_key(kpi_date, content))

    for item in failing:  # one DuckDB connection: one object at a time
        move(item)


def _counted(
    result: RevalidateResult,
    run_id: str,
    objects: list[tuple[dt.date, str]],
    storage: Storage,
    layout: Layout,
) -> RevalidateResult:
    """What the revalidations of these curated objects moved: this run's (its dead
    attempts' too), by reason, with their dates; and earlier runs'."""

    def moved_from(item: tuple[dt.date, str]) -> list[str]:
        kpi_date, content = item
        prefix = layout.ledger_key(f"{content}{REVALIDATED_MARK}{kpi_date.isoformat()}-")
        return [
            PurePosixPath(o.key).stem
            for o in storage.list_objects(layout.data_bucket, prefix.removesuffix(".json"))
            if o.key.endswith(".json")
        ]

    keys = [key for found in parallel(moved_from, objects) for key in found]
    entries = Ledger(storage, layout).entries(keys).values()
    ours = [e for e in entries if e.get("run_id") == run_id]
    reasons = Counter[str]()
    for entry in ours:
        reasons.update(entry.get("rows_quarantined", {}))
    moved_dates = sorted({dt.date.fromisoformat(d) for e in ours for d in e["kpi_dates"]})
    return result.model_copy(
        update={
            "plays_quarantined": dict(sorted(reasons.items())),
            "plays_quarantined_before": sum(
                sum(e.get("rows_quarantined", {}).values()) for e in entries if e not in ours
            ),
            "kpi_dates": moved_dates,
            "kpi_date_count": len(moved_dates),
        }
    )
