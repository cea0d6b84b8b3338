"""Transform: the KPIs of every date this run touched, from all plays ever accepted for it.

A date is touched when this run accepted plays for it, or when content accepted earlier
was never loaded (its run failed after ingesting). Its KPIs are then recomputed from every
curated play of that date, so a late file gives exactly what an on-time file would have.
The KPI logic is SQL (``sql/staging``, ``sql/marts``); this module only moves data.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kpi_pipeline import engine
from kpi_pipeline.contracts import IngestResult, TransformRequest, TransformResult
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import logger
from kpi_pipeline.records import read_ingest_results
from kpi_pipeline.scratch import scratch_dir
from kpi_pipeline.settings import EngineSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse.arrow import fit_to_schema


@dataclass(frozen=True)
class LoadPlan:
    """The dates to recompute and the accepted contents whose plays they cover."""

    kpi_dates: list[dt.date]
    content_keys: list[str]


def plan_dates(results: list[IngestResult]) -> LoadPlan:
    dates: set[dt.date] = set()
    contents: set[str] = set()
    for result in results:
        fresh = result.outcome == "processed"
        never_loaded = result.outcome == "already_processed" and not result.loaded_by_run
        if (fresh or never_loaded) and result.content_key:
            dates.update(result.kpi_dates)
            contents.add(result.content_key)
    return LoadPlan(sorted(dates), sorted(contents))


def compute_kpis(
    request: TransformRequest,
    *,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    work_dir: str,
) -> TransformResult:
    plan = plan_dates(read_ingest_results(storage, layout, request.run_id))
    storage.put_json(
        layout.data_bucket,
        layout.load_plan_key(request.run_id),
        {"kpi_dates": [d.isoformat() for d in plan.kpi_dates], "content_keys": plan.content_keys},
    )
    if not plan.kpi_dates:
        logger.info("no date to recompute: nothing new was accepted")
        return TransformResult(kpi_key=None, kpi_dates=[], kpi_date_count=0)

    with scratch_dir(work_dir, "transform") as tmp:
        songs = tmp / "songs.parquet"
        if not storage.download_file(layout.data_bucket, request.snapshot.songs_key, songs):
            raise FileNotFoundError(f"songs snapshot {request.snapshot.songs_key} is missing")
        plays = _download_curated(storage, layout, plan.kpi_dates, tmp / "plays")
        if not plays:
            raise DataGateError(f"no curated plays found for {plan.kpi_dates}")

        con = engine.connect(engine_settings, tmp)
        try:
            kpis, stats = _run_models(con, songs, plays, plan.kpi_dates, request.run_id)
        finally:
            con.close()

        kpi_key = layout.kpi_key(request.run_id)
        out = tmp / "music_kpi_metrics.parquet"
        pq.write_table(fit_to_schema(kpis), out, compression="zstd")
        storage.upload_file(out, layout.data_bucket, kpi_key)

    result = TransformResult(
        kpi_key=kpi_key,
        kpi_dates=plan.kpi_dates,
        kpi_date_count=len(plan.kpi_dates),
        genre_rows=stats["genre_rows"],
        hourly_rows=stats["hourly_rows"],
        plays_in_kpis=stats["plays_in_kpis"],
        duplicates_across_files=stats["curated_rows"] - stats["plays_in_kpis"],
        plays_without_song=stats["plays_without_song"],
    )
    if result.plays_without_song:
        logger.warning(
            "plays whose track is no longer in songs: counted hourly, not in any genre",
            extra={"plays": result.plays_without_song},
        )
    return result


def run_kpi_models(con: engine.duckdb.DuckDBPyConnection, run_id: str) -> pa.Table:
    """The warehouse rows from the views ``songs``, ``curated_plays`` and ``target_dates``."""
    con.execute("CREATE OR REPLACE TEMP TABLE run_context AS SELECT ? AS run_id", [run_id])
    # Materialised once: every mart and the run statistics read the de-duplicated plays.
    engine.create_table(con, "stg_plays", "staging/stg_plays.sql")
    engine.create_view(con, "genre_daily_kpis", "marts/genre_daily_kpis.sql")
    engine.create_view(con, "hourly_kpis", "marts/hourly_kpis.sql")
    engine.create_view(con, "music_kpi_metrics", "marts/music_kpi_metrics.sql")
    return con.sql(
        "SELECT * FROM music_kpi_metrics "
        "ORDER BY kpi_date, kpi_type, track_genre NULLS FIRST, stream_hour NULLS FIRST"
    ).to_arrow_table()


def _run_models(
    con: engine.duckdb.DuckDBPyConnection,
    songs: Path,
    plays: list[Path],
    kpi_dates: list[dt.date],
    run_id: str,
) -> tuple[pa.Table, dict[str, int]]:
    con.execute(f"CREATE TEMP TABLE songs AS SELECT * FROM read_parquet({engine.literal(songs)})")
    files = engine.parquet_list(plays)
    con.execute(f"CREATE TEMP VIEW curated_plays AS SELECT * FROM read_parquet({files})")
    con.execute("CREATE TEMP TABLE target_dates (kpi_date DATE)")
    con.executemany("INSERT INTO target_dates VALUES (?)", [[d] for d in kpi_dates])
    kpis = run_kpi_models(con, run_id)
    stats = {
        "curated_rows": engine.scalar(
            con,
            "SELECT count(*) FROM curated_plays "
            "WHERE CAST(listen_time AS DATE) IN (SELECT kpi_date FROM target_dates)",
        ),
        "plays_in_kpis": engine.scalar(con, "SELECT count(*) FROM stg_plays"),
        "plays_without_song": engine.scalar(
            con,
            "SELECT count(*) FROM stg_plays WHERE track_id NOT IN (SELECT track_id FROM songs)",
        ),
        "genre_rows": sum(1 for t in kpis.column("kpi_type").to_pylist() if t == "genre"),
    }
    stats["hourly_rows"] = kpis.num_rows - stats["genre_rows"]
    return kpis, stats


def _download_curated(
    storage: Storage, layout: Layout, kpi_dates: list[dt.date], into: Path
) -> list[Path]:
    keys = [
        obj.key
        for kpi_date in kpi_dates
        for obj in storage.list_objects(layout.data_bucket, layout.curated_date_prefix(kpi_date))
        if obj.key.endswith(".parquet")
    ]
    paths = [into / f"{i:06d}.parquet" for i in range(len(keys))]
    with ThreadPoolExecutor(max_workers=16) as pool:
        done = list(
            pool.map(
                lambda kp: storage.download_file(layout.data_bucket, kp[0], kp[1]),
                zip(keys, paths, strict=True),
            )
        )
    if not all(done):
        raise FileNotFoundError("a curated plays file disappeared while the transform ran")
    return paths
