"""Transform: the KPIs of every date the warehouse lacks, from all plays ever accepted for it.

The dates come from the *pending* markers of accepted content (written at ingest, removed
by Load), not from this run's manifest: content accepted by a run that failed before its
load is picked up by the next run whatever files that run sees. Each date is recomputed
from every curated play of that date whose content the ledger accepted, with the songs
catalogue the date was first computed with, so a late file gives exactly the KPIs an
on-time file would have. The KPI logic is SQL (``sql/staging``, ``sql/marts``); this
module only moves data.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kpi_pipeline import engine
from kpi_pipeline.contracts import TransformRequest, TransformResult
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import logger
from kpi_pipeline.scratch import scratch_dir
from kpi_pipeline.settings import EngineSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse.arrow import fit_to_schema

_WORKERS = 16


@dataclass(frozen=True)
class LoadPlan:
    """The dates to recompute and the accepted contents whose plays they cover."""

    kpi_dates: list[dt.date]
    content_keys: list[str]


def plan_dates(pending: list[dict[str, Any]], accepted: set[str]) -> LoadPlan:
    """The dates of every pending content the ledger accepted.

    A pending marker without a ledger entry belongs to an ingest that stopped half-way: its
    file is still in landing and will be ingested again, so its dates are not trusted yet.
    """
    dates: set[dt.date] = set()
    contents: set[str] = set()
    for marker in pending:
        if marker["content_key"] in accepted:
            dates.update(dt.date.fromisoformat(d) for d in marker["kpi_dates"])
            contents.add(marker["content_key"])
    return LoadPlan(sorted(dates), sorted(contents))


def compute_kpis(
    request: TransformRequest,
    *,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    work_dir: str,
) -> TransformResult:
    markers = storage.list_objects(layout.data_bucket, layout.pending_prefix)
    pending = _read_all(storage, layout, [marker.key for marker in markers])
    accepted = _accepted(storage, layout, {m["content_key"] for m in pending})
    plan = plan_dates(pending, accepted)
    storage.put_json(
        layout.data_bucket,
        layout.load_plan_key(request.run_id),
        {"kpi_dates": [d.isoformat() for d in plan.kpi_dates], "content_keys": plan.content_keys},
    )
    if not plan.kpi_dates:
        logger.info("no date to recompute: nothing accepted is waiting for the warehouse")
        return TransformResult(kpi_key=None, kpi_dates=[], kpi_date_count=0)

    with scratch_dir(work_dir, "transform") as tmp:
        catalogues = pin_catalogues(
            storage, layout, plan.kpi_dates, request.run_id, request.snapshot.songs_key
        )
        songs = _download_catalogues(storage, layout, set(catalogues.values()), tmp / "songs")
        plays = _download_curated(storage, layout, plan.kpi_dates, accepted, tmp / "plays")
        if not plays:
            raise DataGateError(f"no curated plays found for {plan.kpi_dates}")

        con = engine.connect(engine_settings, tmp)
        try:
            kpis, stats = _run_models(con, songs, plays, catalogues, request.run_id)
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
            "plays whose track is not in the date's catalogue: counted hourly, in no genre",
            extra={"plays": result.plays_without_song},
        )
    return result


def pin_catalogues(
    storage: Storage,
    layout: Layout,
    kpi_dates: list[dt.date],
    run_id: str,
    songs_key: str,
) -> dict[dt.date, str]:
    """The songs catalogue (an S3 key) each date is computed with.

    A date keeps the catalogue of its first computation: recomputing it for a late file
    must not let today's popularity or genres rewrite a past day. A date computed for the
    first time is pinned to this run's songs snapshot, kept under ``catalogue/`` for good.
    Deleting a date's pin (``catalogue/dates/kpi_date=D.json``) re-pins it on its next
    recomputation, e.g. after correcting the songs table.
    """
    pins = {
        kpi_date: storage.get_json(layout.data_bucket, layout.catalogue_pin_key(kpi_date))
        for kpi_date in kpi_dates
    }
    unpinned = [kpi_date for kpi_date, pin in pins.items() if pin is None]
    if unpinned:
        own = layout.catalogue_songs_key(run_id)
        storage.copy(layout.data_bucket, songs_key, layout.data_bucket, own)
        for kpi_date in unpinned:
            new_pin = {"songs_key": own, "pinned_by_run": run_id}
            key = layout.catalogue_pin_key(kpi_date)
            created = storage.put_json_if_absent(layout.data_bucket, key, new_pin)
            pins[kpi_date] = new_pin if created else storage.get_json(layout.data_bucket, key)
    return {kpi_date: str(pin["songs_key"]) for kpi_date, pin in pins.items() if pin}


def run_kpi_models(con: engine.duckdb.DuckDBPyConnection, run_id: str) -> pa.Table:
    """The warehouse rows from ``songs``, ``curated_plays`` and ``target_dates``.

    ``songs`` holds one or more catalogues (column ``catalogue``); ``target_dates`` names
    the catalogue of each date.
    """
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
    songs: dict[str, Path],
    plays: list[Path],
    catalogues: dict[dt.date, str],
    run_id: str,
) -> tuple[pa.Table, dict[str, int]]:
    catalogues_sql = " UNION ALL BY NAME ".join(
        f"SELECT *, {engine.literal(key)} AS catalogue FROM read_parquet({engine.literal(path)})"
        for key, path in songs.items()
    )
    con.execute(f"CREATE TEMP TABLE songs AS {catalogues_sql}")
    files = engine.parquet_list(plays)
    con.execute(f"CREATE TEMP VIEW curated_plays AS SELECT * FROM read_parquet({files})")
    con.execute("CREATE TEMP TABLE target_dates (kpi_date DATE, catalogue VARCHAR)")
    con.executemany("INSERT INTO target_dates VALUES (?, ?)", list(catalogues.items()))
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
            "SELECT count(*) FROM stg_plays AS p WHERE NOT EXISTS ("
            "SELECT 1 FROM songs AS s WHERE s.track_id = p.track_id AND s.catalogue = p.catalogue)",
        ),
        "genre_rows": sum(1 for t in kpis.column("kpi_type").to_pylist() if t == "genre"),
    }
    stats["hourly_rows"] = kpis.num_rows - stats["genre_rows"]
    return kpis, stats


def _accepted(storage: Storage, layout: Layout, content_keys: set[str]) -> set[str]:
    """The content keys the ledger has accepted."""
    keys = sorted(content_keys)
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        found = pool.map(lambda ck: storage.exists(layout.data_bucket, layout.ledger_key(ck)), keys)
    return {key for key, present in zip(keys, found, strict=True) if present}


def _read_all(storage: Storage, layout: Layout, keys: list[str]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        documents = list(pool.map(lambda key: storage.get_json(layout.data_bucket, key), keys))
    return [doc for doc in documents if doc is not None]


def _download_catalogues(
    storage: Storage, layout: Layout, keys: set[str], into: Path
) -> dict[str, Path]:
    paths = {key: into / f"{i:03d}.parquet" for i, key in enumerate(sorted(keys))}
    for key, path in paths.items():
        if not storage.download_file(layout.data_bucket, key, path):
            raise FileNotFoundError(f"songs catalogue s3://{layout.data_bucket}/{key} is missing")
    return paths


def _download_curated(
    storage: Storage, layout: Layout, kpi_dates: list[dt.date], accepted: set[str], into: Path
) -> list[Path]:
    """Every curated plays file of the dates whose content the ledger accepted.

    A curated file without a ledger entry was written by an ingest that stopped before
    accepting its file: its plays are not counted (the file is ingested again later).
    """
    keys = [
        obj.key
        for kpi_date in kpi_dates
        for obj in storage.list_objects(layout.data_bucket, layout.curated_date_prefix(kpi_date))
        if obj.key.endswith(".parquet")
    ]
    # ``accepted`` already holds the pending contents; look up only the older ones.
    contents = {Path(key).stem for key in keys}
    accepted = accepted | _accepted(storage, layout, contents - accepted)
    keys = [key for key in keys if Path(key).stem in accepted]
    paths = [into / f"{i:06d}.parquet" for i in range(len(keys))]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        done = list(
            pool.map(
                lambda kp: storage.download_file(layout.data_bucket, kp[0], kp[1]),
                zip(keys, paths, strict=True),
            )
        )
    if not all(done):
        raise FileNotFoundError("a curated plays file disappeared while the transform ran")
    return paths
