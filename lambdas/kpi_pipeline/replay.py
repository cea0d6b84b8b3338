"""ReplayQuarantine: quarantined rows checked again, and those valid now accepted once.

A row quarantined as ``unknown_user_id`` or ``unknown_track_id`` may be a valid play after
all: its user or track reached the source after the file was ingested. A replay reads the
quarantined rows of the reasons asked for (``quarantine/rows/<content>.parquet``, kept as
ingested, never rewritten), parses them with the ingest's own SQL, and checks them against
the snapshot their date is validated with (its pin, else today's: see
:mod:`kpi_pipeline.catalogue`), exactly as the ingest would today.

The rows that pass become a new ledger content per quarantined file,
``<content>-replay-<digest of the row numbers>``, written in the ingest's order (curated
plays, pending marker, then the ledger entry, only if absent), so PlanTransform recomputes
their dates like any accepted file's. Each entry lists the row numbers it accepted: a later
replay skips them, so a row is never accepted twice, and a replay that died half-way
accepts the same rows under the same key when it runs again. The rest stay quarantined,
counted by the reason they fail with now.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb

from kpi_pipeline import engine
from kpi_pipeline.catalogue import pin_dates, snapshot_of_dates
from kpi_pipeline.contracts import ReplayRequest, ReplayResult
from kpi_pipeline.engine import create_table, create_view, literal, parquet_list
from kpi_pipeline.ingest import copy_plays, register_snapshots
from kpi_pipeline.kept import download_parquet
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.observability import logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.scratch import open_scratch
from kpi_pipeline.settings import EngineSettings, ScratchSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.streams import download_snapshots
from kpi_pipeline.warehouse.copy_parquet import COPY_FORMAT

REPLAY_MARK = "-replay-"


def replay_quarantine(
    request: ReplayRequest,
    *,
    storage: Storage,
    layout: Layout,
    engine_settings: EngineSettings,
    scratch: ScratchSettings,
) -> ReplayResult:
    options = request.request
    result = ReplayResult(
        reasons=options.reasons, date_from=options.date_from, date_to=options.date_to
    )
    ledger = Ledger(storage, layout)
    quarantined = _accepted_quarantine(storage, layout, ledger, options.reasons)
    if not quarantined:
        return _written(result, request, storage, layout)
    with open_scratch(scratch, "replay") as space:
        # the objects, DuckDB's copy of their rows, and the plays written
        space.reserve(3 * sum(quarantined.values()), "the quarantined rows")
        paths = _download(storage, layout, sorted(quarantined), space.path)
        con = engine.connect(engine_settings, space.path, spill_limit_mb=space.spill_limit_mb())
        try:
            entries = _replay_entries(storage, layout, ledger, sorted(quarantined))
            with_today, replayed_before = _recheck(
                con, paths, request, entries, storage, layout, space.path
            )
            result = _accept(con, request, result, with_today, storage, layout, space.path)
        finally:
            con.close()
    # An earlier attempt of this very run (killed after its ledger entry) accepted them:
    # counted as this run's, never re-checked.
    own = [e for e in entries if e.get("run_id") == request.run_id]
    accepted_before = Counter[str]()
    for entry in own:
        accepted_before.update(entry.get("replayed_reasons", {}))
    result = result.model_copy(
        update={
            "quarantine_objects": len(quarantined),
            "rows_replayed_before": replayed_before,
            "rows_rechecked": _added(result.rows_rechecked, accepted_before),
            "rows_accepted": _added(result.rows_accepted, accepted_before),
            "plays_valid": result.plays_valid + sum(int(e["plays_valid"]) for e in own),
            "contents": result.contents + len(own),
            "kpi_dates": sorted(
                {
                    *result.kpi_dates,
                    *(dt.date.fromisoformat(d) for e in own for d in e["kpi_dates"]),
                }
            ),
        }
    )
    return _written(result, request, storage, layout)


def _added(counts: dict[str, int], more: Counter[str]) -> dict[str, int]:
    return dict(sorted((Counter(counts) + more).items()))


def _written(
    result: ReplayResult, request: ReplayRequest, storage: Storage, layout: Layout
) -> ReplayResult:
    # Archive summarises it from here (the state passes references, and a daily run has none)
    document = result.model_dump(mode="json")
    storage.put_json(layout.data_bucket, layout.replay_result_key(request.run_id), document)
    logger.info("quarantine replayed", extra={"replay": document})
    return result


def _accepted_quarantine(
    storage: Storage, layout: Layout, ledger: Ledger, reasons: list[str]
) -> dict[str, int]:
    """The quarantined-row objects, with their sizes, of accepted contents whose ingest
    quarantined rows of ``reasons`` (its ledger entry counts them: no other object is read).

    An object whose ingest died before its ledger entry belongs to content that is not
    accepted yet: its file is ingested again, and replaying it would count a row that
    ingest may accept.
    """
    sizes = {
        PurePosixPath(o.key).stem: o.size
        for o in storage.list_objects(layout.data_bucket, layout.quarantine_rows_prefix)
        if o.key.endswith(".parquet")
    }
    entries = ledger.entries(sizes)
    return {
        content: size
        for content, size in sizes.items()
        if content in entries
        and any(entries[content].get("rows_quarantined", {}).get(r) for r in reasons)
    }


def _download(storage: Storage, layout: Layout, contents: list[str], tmp: Path) -> list[Path]:
    folder = tmp / "quarantine"
    folder.mkdir()

    def download(indexed: tuple[int, str]) -> Path:
        path = folder / f"{indexed[0]}.parquet"
        key = layout.quarantine_rows_key(indexed[1])
        if not download_parquet(storage, layout.data_bucket, key, path, what="quarantined rows"):
            raise FileNotFoundError(f"quarantined rows s3://{layout.data_bucket}/{key} are missing")
        return path

    return parallel(download, list(enumerate(contents)))


def _replay_entries(
    storage: Storage, layout: Layout, ledger: Ledger, contents: list[str]
) -> list[dict[str, Any]]:
    """The ledger entries of earlier replays of these quarantined contents."""

    def replays_of(content: str) -> list[str]:
        prefix = layout.ledger_key(content + REPLAY_MARK).removesuffix(".json")
        return [
            PurePosixPath(o.key).stem
            for o in storage.list_objects(layout.data_bucket, prefix)
            if o.key.endswith(".json")
        ]

    keys = [key for found in parallel(replays_of, contents) for key in found]
    return list(ledger.entries(keys).values())


def _recheck(
    con: duckdb.DuckDBPyConnection,
    paths: list[Path],
    request: ReplayRequest,
    entries: list[dict[str, Any]],
    storage: Storage,
    layout: Layout,
    tmp: Path,
) -> tuple[set[dt.date], int]:
    """Table ``rechecked``: each quarantined row of the reasons and dates asked for that no
    replay accepted yet, with the reason it fails with now (NULL: a valid play).
    Returns the dates checked with today's snapshot (they had no pin), and how many rows of
    those reasons and dates an earlier replay accepted (``entries``: the replays' ledger
    entries; this run's own, from an attempt that died, are counted as this run's)."""
    options = request.request
    con.execute(
        "CREATE TEMP TABLE replayed (content_key VARCHAR, record_number BIGINT, earlier BOOLEAN)"
    )
    rows = [
        (entry["replay_of"], number, entry.get("run_id") != request.run_id)
        for entry in entries
        for number in entry["replayed_rows"]
    ]
    if rows:
        con.executemany("INSERT INTO replayed VALUES (?, ?, ?)", rows)
    reasons = ", ".join(literal(r) for r in options.reasons)
    con.execute(
        f"""
        CREATE TEMP TABLE candidates AS
        SELECT row_number() OVER () AS row_id, q.*, r.earlier
        FROM (
            SELECT content_key, source_key, record_number, user_id, track_id, listen_time,
                reason
            FROM read_parquet({parquet_list(paths)}, union_by_name = true)
            WHERE reason IN ({reasons})
        ) AS q
        LEFT JOIN replayed AS r USING (content_key, record_number)
        """
    )
    # The ingest's own parsing: the same typed values, the same kpi_date.
    con.execute(
        "CREATE TEMP VIEW raw_rows AS SELECT row_id AS record_number, user_id, track_id, "
        "listen_time FROM candidates"
    )
    create_table(con, "parsed_rows", "ingest/parse_stream_rows.sql")
    con.execute(
        "DELETE FROM parsed_rows WHERE kpi_date IS NULL OR kpi_date < ? OR kpi_date > ?",
        [options.date_from or dt.date.min, options.date_to or dt.date.max],
    )
    # Rows a replay accepted already are parsed for their date only: those of the dates
    # asked for that an earlier run accepted are counted; none is re-checked.
    found = con.execute(
        "SELECT count(*) FROM parsed_rows AS p JOIN candidates AS c ON p.record_number = c.row_id "
        "WHERE c.earlier"
    ).fetchone()
    con.execute(
        "DELETE FROM parsed_rows WHERE record_number IN "
        "(SELECT row_id FROM candidates WHERE earlier IS NOT NULL)"
    )
    dates = [r[0] for r in con.execute("SELECT DISTINCT kpi_date FROM parsed_rows").fetchall()]
    refs = snapshot_of_dates(storage, layout, sorted(dates), request.snapshot)
    local = download_snapshots(set(refs.values()), storage, layout, tmp)
    # only the ids these rows name: a year of dates may bring a snapshot each
    register_snapshots(con, {d: local[ref] for d, ref in refs.items()}, only_named=True)
    create_view(con, "classified_rows", "ingest/classify_stream_rows.sql")
    con.execute(
        """
        CREATE TEMP TABLE rechecked AS
        SELECT c.content_key, c.source_key, c.record_number, c.reason AS quarantined_for,
            r.reason AS reason_now, r.user_id, r.track_id, r.listen_time, r.kpi_date
        FROM classified_rows AS r
        JOIN candidates AS c ON r.record_number = c.row_id
        """
    )
    return {d for d, ref in refs.items() if ref == request.snapshot}, int(found[0] if found else 0)


def _accept(
    con: duckdb.DuckDBPyConnection,
    request: ReplayRequest,
    result: ReplayResult,
    with_today: set[dt.date],
    storage: Storage,
    layout: Layout,
    tmp: Path,
) -> ReplayResult:
    """Write the rows valid now as one new content per quarantined file, in the ingest's
    order; count what was re-checked, accepted and left in quarantine."""

    def by(column: str, where: str) -> dict[str, int]:
        rows = con.execute(
            f"SELECT {column}, count(*) FROM rechecked WHERE {where} GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return {str(reason): int(n) for reason, n in rows}

    valid = con.execute(
        """
        SELECT content_key, any_value(source_key), list(record_number ORDER BY record_number),
            list(DISTINCT kpi_date ORDER BY kpi_date), list(quarantined_for)
        FROM rechecked WHERE reason_now IS NULL GROUP BY content_key ORDER BY content_key
        """
    ).fetchall()
    dates = sorted({d for _, _, _, content_dates, _ in valid for d in content_dates})
    # Pinned before any play is written, as the ingest does: a replay that dies and runs
    # again checks each date with the same snapshot, so it accepts the same rows.
    pin_dates(
        storage,
        layout,
        dates,
        request.run_id,
        request.snapshot,
        validated_unpinned=with_today & set(dates),
    )
    plays = 0
    for content, source_key, numbers, content_dates, reasons in valid:
        plays += _write_content(
            con,
            request,
            _Accepted(content, source_key, numbers, content_dates, Counter(reasons)),
            storage,
            layout,
            tmp,
        )
    return result.model_copy(
        update={
            "rows_rechecked": by("quarantined_for", "true"),
            "rows_accepted": by("quarantined_for", "reason_now IS NULL"),
            "rows_still_quarantined": by("reason_now", "reason_now IS NOT NULL"),
            "plays_valid": plays,
            "contents": len(valid),
            "kpi_dates": dates,
        }
    )


@dataclass(frozen=True)
class _Accepted:
    """One quarantined file's rows that are valid now."""

    content: str
    source_key: str
    numbers: list[int]  # their record numbers in the file
    kpi_dates: list[dt.date]
    reasons: Counter[str]  # what they were quarantined for


def _write_content(
    con: duckdb.DuckDBPyConnection,
    request: ReplayRequest,
    accepted: _Accepted,
    storage: Storage,
    layout: Layout,
    tmp: Path,
) -> int:
    """One quarantined file's rows valid now, as the content ``<content>-replay-<digest>``:
    its curated plays per date, its pending marker, then its ledger entry (if absent)."""
    content, numbers = accepted.content, accepted.numbers
    digest = hashlib.sha256(",".join(map(str, numbers)).encode()).hexdigest()[:16]
    replay_key = f"{content}{REPLAY_MARK}{digest}"
    plays_by_date: dict[str, int] = {}
    for kpi_date in accepted.kpi_dates:
        path = tmp / f"{replay_key}-{kpi_date.isoformat()}.parquet"
        plays_by_date[kpi_date.isoformat()] = copy_plays(
            con,
            "SELECT DISTINCT user_id, track_id, listen_time, kpi_date FROM rechecked "
            "WHERE content_key = ? AND kpi_date = ? AND reason_now IS NULL",
            [content, kpi_date],
            replay_key,
            path,
        )
        storage.upload_file(
            path, layout.data_bucket, layout.curated_plays_key(kpi_date, replay_key)
        )
    dates = sorted(plays_by_date)
    marker = {"content_key": replay_key, "run_id": request.run_id, "kpi_dates": dates}
    storage.put_json(layout.data_bucket, layout.pending_key(replay_key), marker)
    entry: dict[str, Any] = {
        "content_key": replay_key,
        "replay_of": content,
        "source_key": accepted.source_key,
        "run_id": request.run_id,
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(),
        "kpi_dates": dates,
        "plays_valid": sum(plays_by_date.values()),
        "plays_by_date": plays_by_date,
        "copy_format": COPY_FORMAT,  # its curated Parquet follows these COPY rules
        "duplicates": len(numbers) - sum(plays_by_date.values()),
        "rows_quarantined": {},
        "replayed_rows": numbers,
        "replayed_reasons": dict(sorted(accepted.reasons.items())),
    }
    storage.put_json_if_absent(layout.data_bucket, layout.ledger_key(replay_key), entry)
    return int(entry["plays_valid"])
