"""Transform: the KPIs of one date of the plan, from every play ever accepted for it.

PlanTransform (:mod:`kpi_pipeline.transform_plan`) chooses the dates and writes them for
the TransformDates Map; each date is then computed here, in a call of its own, from
exactly the curated objects the plan lists for it, with the songs catalogue the date is
pinned to, so a late file gives exactly the KPIs an on-time file would have. Each call
writes one KPI part (what Load's COPY reads) and its figures (what Archive adds up). The KPI
logic is SQL (``sql/staging``, ``sql/intermediate``, ``sql/marts``); this module only moves
data.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kpi_pipeline import engine
from kpi_pipeline.contracts import TransformDateRequest, TransformDateResult
from kpi_pipeline.kept import download_parquet
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.observability import logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.scratch import ScratchSpace, open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.transform_plan import planned_date
from kpi_pipeline.warehouse.arrow import fit_to_schema
from kpi_pipeline.warehouse.copy_parquet import WRITE_CODEC


def compute_date(
    request: TransformDateRequest,
    *,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    scratch: ScratchSettings,
) -> TransformDateResult:
    planned = planned_date(request, storage=storage, layout=layout)
    kpi_date, contents = planned.kpi_date, planned.contents

    kpi_prefix = layout.kpi_prefix(request.run_id, request.attempt)
    with open_scratch(scratch, "transform") as space:
        _check_fits(kpi_date, contents, Ledger(storage, layout), space)
        stats = _transform_date(
            kpi_date,
            contents,
            planned.songs_key,
            kpi_key=layout.kpi_part_key(kpi_prefix, kpi_date),
            run_id=request.run_id,
            work=space.path / f"date-{kpi_date.isoformat()}",
            space=space,
            storage=storage,
            layout=layout,
            engine_settings=engine_settings,
        )
    result = TransformDateResult.model_validate({"kpi_date": kpi_date, **stats})
    storage.put_json(
        layout.data_bucket,
        layout.transform_result_key(request.run_id, request.attempt, kpi_date),
        result.model_dump(mode="json"),
    )
    logger.info("KPIs computed", extra=result.model_dump(mode="json"))
    if result.plays_without_song:
        logger.warning(
            "plays whose track is not in the date's catalogue: counted hourly, in no genre",
            extra={"kpi_date": kpi_date.isoformat(), "plays": result.plays_without_song},
        )
    return result


def _check_fits(
    kpi_date: dt.date, contents: list[str], ledger: Ledger, space: ScratchSpace
) -> None:
    """The date's curated plays must fit a third of the free scratch space (the rest is for
    DuckDB's spill and the outputs): a date that cannot fails at once, naming the setting."""
    free = space.free_bytes()
    if free is None:
        return
    sizes = ledger.curated_sizes(kpi_date)
    size = sum(sizes.get(content, 0) for content in contents)  # a missing one fails download
    if size > free // 3:
        raise space.exhausted(
            f"the curated plays of {kpi_date} ({size:,} bytes) need more than a third of "
            f"the {free:,} bytes free"
        )


def _transform_date(
    kpi_date: dt.date,
    contents: list[str],
    songs_key: str,
    *,
    kpi_key: str,
    run_id: str,
    work: Path,
    space: ScratchSpace,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
) -> dict[str, int]:
    """Compute the KPIs of one date, upload them as one part, free the scratch space."""
    songs = work / "songs.parquet"
    bucket = layout.data_bucket
    if not download_parquet(storage, bucket, songs_key, songs, what="the songs catalogue"):
        raise FileNotFoundError(f"songs catalogue s3://{bucket}/{songs_key} is missing")
    artists = work / "song_artists.parquet"
    # Split at extract; a catalogue pinned before that has none, and is split here.
    has_artists = download_parquet(
        storage, bucket, layout.song_artists_key(songs_key), artists, what="the song artists"
    )
    plays = _download_curated(storage, layout, kpi_date, contents, work / "plays")
    con = engine.connect(engine_settings, work, spill_limit_mb=space.spill_limit_mb())
    try:
        kpis, stats = _run_models(
            con,
            {songs_key: songs},
            {kpi_date: plays},
            {kpi_date: songs_key},
            run_id,
            song_artists={songs_key: artists} if has_artists else None,
        )
    finally:
        con.close()
    out = work / "music_kpi_metrics.parquet"
    pq.write_table(fit_to_schema(kpis), out, compression=WRITE_CODEC)  # what COPY reads
    storage.upload_file(out, layout.data_bucket, kpi_key)
    shutil.rmtree(work)
    return stats


def run_example_models(
    work: Path, songs: Path, song_artists: Path, plays: Path, run_id: str
) -> pa.Table:
    """The KPI rows of one date's curated plays with one catalogue, as a Transform call
    computes them (the preflight's worked example)."""
    kpi_date = pq.read_table(plays, columns=["kpi_date"]).column(0)[0].as_py()
    con = engine.connect(EngineSettings(), work)
    try:
        kpis, _ = _run_models(
            con,
            {"example": songs},
            {kpi_date: [plays]},
            {kpi_date: "example"},
            run_id,
            song_artists={"example": song_artists},
        )
    finally:
        con.close()
    return kpis


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
        engine.create_table(con, "stg_play_tracks", "staging/stg_play_tracks.sql")
        engine.create_table(con, "stg_plays", "staging/stg_plays.sql")
        for table in ("int_hourly_track_plays", "int_hourly_listeners"):
            model = f"intermediate/{table}.sql"
            if number == 0:
                engine.create_table(con, table, model)
            else:
                engine.append_to_table(con, table, model)
    con.execute("DROP TABLE IF EXISTS stg_plays")
    con.execute("DROP TABLE IF EXISTS stg_play_tracks")
    # Given by the caller when the extract split them; otherwise split here, the same way.
    con.execute(
        "CREATE TEMP TABLE IF NOT EXISTS song_artists AS "
        + engine.sql("staging/stg_song_artists.sql")
    )
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
    *,
    song_artists: dict[str, Path] | None = None,
) -> tuple[pa.Table, dict[str, int]]:
    con.execute(f"CREATE TEMP TABLE songs AS {_per_catalogue(songs)}")
    if song_artists:
        con.execute(f"CREATE TEMP TABLE song_artists AS {_per_catalogue(song_artists)}")
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


def _per_catalogue(paths: dict[str, Path]) -> str:
    """The rows of each catalogue's Parquet, with its key as column ``catalogue``."""
    return " UNION ALL BY NAME ".join(
        f"SELECT *, {engine.literal(key)} AS catalogue FROM read_parquet({engine.literal(path)})"
        for key, path in paths.items()
    )


def _download_curated(
    storage: Storage, layout: Layout, kpi_date: dt.date, contents: list[str], into: Path
) -> list[Path]:
    """Exactly the curated objects the plan lists for the date (see kpi_pipeline.ledger)."""
    keys = [layout.curated_plays_key(kpi_date, content) for content in contents]
    paths = [into / f"{i:06d}.parquet" for i in range(len(keys))]
    done = parallel(
        lambda kp: download_parquet(
            storage, layout.data_bucket, kp[0], kp[1], what="the curated plays"
        ),
        zip(keys, paths, strict=True),
    )
    missing = [key for key, present in zip(keys, done, strict=True) if not present]
    if missing:
        raise FileNotFoundError(f"curated plays the ledger lists are missing: {missing[:5]}")
    return paths
