"""Transform: the KPIs of every date the warehouse lacks, from all plays ever accepted for it.

The dates come from the *pending* markers of accepted content (written at ingest, removed
by Load), not from this run's manifest: content accepted by a run that failed before its
load is picked up by the next run whatever files that run sees. Each date is recomputed
from exactly the curated objects the ledger lists for it (see :mod:`kpi_pipeline.ledger`),
with the songs catalogue the date was first computed with, so a late file gives exactly
the KPIs an on-time file would have. The KPI logic is SQL (``sql/staging``, ``sql/marts``); this
module only moves data.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kpi_pipeline import engine
from kpi_pipeline.catalogue import pin_dates
from kpi_pipeline.contracts import TransformRequest, TransformResult
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.observability import logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.planning import LoadPlan, make_plan, read_plan, write_plan
from kpi_pipeline.scratch import ScratchSpace, open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse.arrow import fit_to_schema


def compute_kpis(
    request: TransformRequest,
    *,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    scratch: ScratchSettings,
) -> TransformResult:
    ledger = Ledger(storage, layout)
    previous = read_plan(storage, layout, request.run_id)
    planned = make_plan(ledger, version=previous.version + 1 if previous else 1)
    if planned.unloadable:
        logger.warning(
            "pending markers no load can clear were removed (an ingest that died before "
            "accepting its file, or content without a valid play)",
            extra={"contents": planned.unloadable},
        )
        ledger.remove_pending(planned.unloadable)
    plan = planned.plan
    write_plan(storage, layout, request.run_id, plan)
    if not plan.kpi_dates:
        logger.info("no date to recompute: nothing accepted is waiting for the warehouse")
        return TransformResult(kpi_prefix=None, kpi_dates=[], kpi_date_count=0)

    # Normally pinned at ingest; a date accepted before pins existed is pinned now.
    pins = pin_dates(storage, layout, plan.kpi_dates, request.run_id, request.snapshot)
    catalogues = {kpi_date: pin.songs_key for kpi_date, pin in pins.items()}
    # Each attempt writes its own parts: a retry never mixes with a dead attempt's.
    kpi_prefix = layout.kpi_prefix(request.run_id, uuid.uuid4().hex[:12])
    totals: Counter[str] = Counter()
    with open_scratch(scratch, "transform") as space:
        batches = date_batches(plan, ledger, space)
        for number, dates in enumerate(batches):
            stats = _transform_batch(
                dates,
                plan.contents_by_date,
                {d: catalogues[d] for d in dates},
                kpi_key=f"{kpi_prefix}part-{number:05d}.parquet",
                run_id=request.run_id,
                work=space.path / f"batch-{number:05d}",
                space=space,
                storage=storage,
                layout=layout,
                engine_settings=engine_settings,
            )
            totals.update(stats)
    logger.info("KPIs computed", extra={"dates": len(plan.kpi_dates), "batches": len(batches)})

    result = TransformResult(
        kpi_prefix=kpi_prefix,
        kpi_dates=plan.kpi_dates,
        kpi_date_count=len(plan.kpi_dates),
        kpi_batches=len(batches),
        genre_rows=totals["genre_rows"],
        hourly_rows=totals["hourly_rows"],
        plays_in_kpis=totals["plays_in_kpis"],
        duplicates_across_files=totals["curated_rows"] - totals["plays_in_kpis"],
        plays_without_song=totals["plays_without_song"],
    )
    if result.plays_without_song:
        logger.warning(
            "plays whose track is not in the date's catalogue: counted hourly, in no genre",
            extra={"plays": result.plays_without_song},
        )
    return result


def date_batches(plan: LoadPlan, ledger: Ledger, space: ScratchSpace) -> list[list[dt.date]]:
    """The plan's dates in batches whose curated plays fit a third of the free scratch space
    (the rest is for DuckDB's spill and the outputs): a week of backlog never fills /tmp."""
    free = space.free_bytes()
    if free is None:
        return [plan.kpi_dates]
    budget = free // 3
    batches: list[list[dt.date]] = []
    used = budget + 1
    for kpi_date in plan.kpi_dates:
        size = sum(ledger.curated_size(kpi_date, c) for c in plan.contents_by_date[kpi_date])
        if size > budget:
            raise space.exhausted(
                f"the curated plays of {kpi_date} ({size:,} bytes) need more than a third of "
                f"the {free:,} bytes free"
            )
        if used + size > budget:
            batches.append([])
            used = 0
        batches[-1].append(kpi_date)
        used += size
    return batches


def _transform_batch(
    dates: list[dt.date],
    contents_by_date: dict[dt.date, list[str]],
    catalogues: dict[dt.date, str],
    *,
    kpi_key: str,
    run_id: str,
    work: Path,
    space: ScratchSpace,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
) -> dict[str, int]:
    """Compute the KPIs of some dates, upload them as one part, free the scratch space."""
    songs = _download_catalogues(storage, layout, set(catalogues.values()), work / "songs")
    plays = _download_curated(
        storage, layout, {d: contents_by_date[d] for d in dates}, work / "plays"
    )
    if without := [d.isoformat() for d in dates if d not in plays]:
        raise DataGateError(f"no curated plays found for {without}")
    con = engine.connect(engine_settings, work, spill_limit_mb=space.spill_limit_mb())
    try:
        kpis, stats = _run_models(con, songs, plays, catalogues, run_id)
    finally:
        con.close()
    out = work / "music_kpi_metrics.parquet"
    pq.write_table(fit_to_schema(kpis), out, compression="zstd")
    storage.upload_file(out, layout.data_bucket, kpi_key)
    shutil.rmtree(work)
    return stats


def run_kpi_models(
    con: engine.duckdb.DuckDBPyConnection,
    run_id: str,
    catalogues: Mapping[dt.date, str],
    plays: Mapping[dt.date, str],
) -> pa.Table:
    """The warehouse rows of the dates of ``catalogues``, from the table ``songs``.

    ``songs`` holds one or more catalogues (column ``catalogue``); ``catalogues`` names the
    one of each date, and ``plays`` the relation (a table, ``read_parquet(...)``) that holds
    each date's curated plays. Plays are de-duplicated a date at a time (stg_plays.sql)
    into the small hourly tables every mart reads.
    """
    if set(plays) != set(catalogues):
        raise ValueError(f"plays and catalogues name different dates: {plays}, {catalogues}")
    con.execute("CREATE OR REPLACE TEMP TABLE run_context AS SELECT ? AS run_id", [run_id])
    con.execute("CREATE OR REPLACE TEMP TABLE target_dates (kpi_date DATE, catalogue VARCHAR)")
    con.executemany("INSERT INTO target_dates VALUES (?, ?)", list(catalogues.items()))
    for number, kpi_date in enumerate(sorted(plays)):
        con.execute(f"CREATE OR REPLACE TEMP VIEW curated_plays AS SELECT * FROM {plays[kpi_date]}")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE kpi_day AS SELECT ?::DATE AS kpi_date", [kpi_date]
        )
        engine.create_table(con, "stg_plays", "staging/stg_plays.sql")
        for table in ("int_hourly_track_plays", "int_hourly_listeners"):
            model = f"intermediate/{table}.sql"
            if number == 0:
                engine.create_table(con, table, model)
            else:
                engine.append_to_table(con, table, model)
    con.execute("DROP TABLE IF EXISTS stg_plays")
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
    plays: Mapping[dt.date, list[Path]],
    catalogues: dict[dt.date, str],
    run_id: str,
) -> tuple[pa.Table, dict[str, int]]:
    catalogues_sql = " UNION ALL BY NAME ".join(
        f"SELECT *, {engine.literal(key)} AS catalogue FROM read_parquet({engine.literal(path)})"
        for key, path in songs.items()
    )
    con.execute(f"CREATE TEMP TABLE songs AS {catalogues_sql}")
    relations = {d: f"read_parquet({engine.parquet_list(paths)})" for d, paths in plays.items()}
    kpis = run_kpi_models(con, run_id, catalogues, relations)
    every_file = engine.parquet_list([path for paths in plays.values() for path in paths])
    stats = {
        # Each curated object holds the plays of one date: Parquet metadata counts them.
        "curated_rows": engine.scalar(con, f"SELECT count(*) FROM read_parquet({every_file})"),
        "plays_in_kpis": engine.scalar(con, "SELECT sum(plays) FROM int_hourly_track_plays"),
        "plays_without_song": engine.scalar(
            con,
            "SELECT sum(plays) FROM int_hourly_track_plays AS p WHERE NOT EXISTS ("
            "SELECT 1 FROM songs AS s WHERE s.track_id = p.track_id AND s.catalogue = p.catalogue)",
        ),
        "genre_rows": sum(1 for t in kpis.column("kpi_type").to_pylist() if t == "genre"),
    }
    stats["hourly_rows"] = kpis.num_rows - stats["genre_rows"]
    return kpis, stats


def _download_catalogues(
    storage: Storage, layout: Layout, keys: set[str], into: Path
) -> dict[str, Path]:
    paths = {key: into / f"{i:03d}.parquet" for i, key in enumerate(sorted(keys))}
    for key, path in paths.items():
        if not storage.download_file(layout.data_bucket, key, path):
            raise FileNotFoundError(f"songs catalogue s3://{layout.data_bucket}/{key} is missing")
    return paths


def _download_curated(
    storage: Storage, layout: Layout, contents_by_date: dict[dt.date, list[str]], into: Path
) -> dict[dt.date, list[Path]]:
    """Exactly the curated objects the ledger lists for each date (see kpi_pipeline.ledger)."""
    objects = [
        (kpi_date, layout.curated_plays_key(kpi_date, content_key))
        for kpi_date, content_keys in sorted(contents_by_date.items())
        for content_key in content_keys
    ]
    paths = [into / f"{i:06d}.parquet" for i in range(len(objects))]
    done = parallel(
        lambda kp: storage.download_file(layout.data_bucket, kp[0], kp[1]),
        zip((key for _, key in objects), paths, strict=True),
    )
    missing = [key for (_, key), present in zip(objects, done, strict=True) if not present]
    if missing:
        raise FileNotFoundError(f"curated plays the ledger lists are missing: {missing[:5]}")
    by_date: dict[dt.date, list[Path]] = {}
    for (kpi_date, _), path in zip(objects, paths, strict=True):
        by_date.setdefault(kpi_date, []).append(path)
    return by_date
