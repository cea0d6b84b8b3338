"""PlanTransform: which dates this run recomputes, one unit of work each.

The dates come from the *pending* markers of accepted content (written at ingest, removed
by Load), not from this run's manifest: content accepted by a run that failed before its
load is picked up by the next run whatever files that run sees. The plan lists, for each
date, exactly the curated objects the ledger lists for it (see :mod:`kpi_pipeline.ledger`);
each date is pinned to its songs catalogue; and the dates are written to S3 as the items of
the TransformDates Distributed Map, so a backlog of any length never passes through a
state's payload. Each date is then computed by its own Transform call
(:func:`kpi_pipeline.kpis.compute_date`), which writes one KPI part and its figures;
Archive adds the figures up (:func:`transform_totals`).

No DuckDB here: this module runs in a small function.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from kpi_pipeline.catalogue import pin_dates, read_pins, repin_dates
from kpi_pipeline.contracts import (
    RecomputeReport,
    TransformDateRequest,
    TransformDateResult,
    TransformRequest,
    TransformResult,
)
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.observability import logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.planning import LoadPlan, make_plan, read_plan, write_plan
from kpi_pipeline.settings import TransformEngineSettings
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse.copy_parquet import COPY_FORMAT


def plan_transform(
    request: TransformRequest,
    *,
    storage: Storage,
    layout: Layout,
    engines: TransformEngineSettings,
    writers_end_within: dt.timedelta = dt.timedelta(minutes=16),
) -> TransformResult:
    ledger = Ledger(storage, layout)
    previous = read_plan(storage, layout, request.run_id)
    version = previous.version + 1 if previous else 1
    recompute = None
    if request.request.kind == "recompute":
        plan, recompute = _plan_range(request, ledger, version)
    else:
        plan = _plan_pending(ledger, version, writers_end_within, engines.max_dates_per_run)
    write_plan(storage, layout, request.run_id, plan)
    if not plan.kpi_dates:
        logger.info("no date to recompute: nothing accepted is waiting for the warehouse")
        return TransformResult(kpi_prefix=None, kpi_dates=[], kpi_date_count=0, recompute=recompute)

    # Normally pinned at ingest; a date accepted before pins existed is pinned now.
    pin_dates(storage, layout, plan.kpi_dates, request.run_id, request.snapshot)
    # Each attempt writes its own parts: a retry never mixes with a dead attempt's.
    attempt = uuid.uuid4().hex[:12]
    dates_key = layout.transform_dates_key(request.run_id, attempt)
    plays = plays_by_date(ledger, plan)
    older = _written_before_copy_format(ledger, plan)
    items = [
        {
            "kpi_date": d.isoformat(),
            "engine": "lambda" if d in older else engines.engine_for(plays[d]),
            "plays": plays[d],
        }
        for d in plan.kpi_dates
    ]
    if older and engines.transform_engine != "lambda":
        logger.warning(
            "dates whose files were written before Redshift's Parquet rules are computed "
            "with DuckDB (kpi_pipeline.warehouse.copy_parquet)",
            extra={"dates": [d.isoformat() for d in sorted(older)][:20], "count": len(older)},
        )
    storage.put_json(layout.data_bucket, dates_key, items)
    in_warehouse = sum(1 for item in items if item["engine"] == "warehouse")
    logger.info(
        "dates planned",
        extra={
            "dates": len(items),
            "dates_in_warehouse": in_warehouse,
            "engine": engines.transform_engine,
            "plan": plan.version,
        },
    )
    return TransformResult(
        kpi_prefix=layout.kpi_prefix(request.run_id, attempt),
        kpi_dates=plan.kpi_dates,
        kpi_date_count=len(plan.kpi_dates),
        plan_version=plan.version,
        attempt=attempt,
        dates_key=dates_key,
        dates_in_warehouse=in_warehouse,
        recompute=recompute,
    )


def _plan_pending(
    ledger: Ledger, version: int, writers_end_within: dt.timedelta, max_dates: int
) -> LoadPlan:
    """The daily plan: the dates of accepted content the warehouse lacks, at most
    ``max_dates`` of them (the rest wait for the next runs)."""
    planned = make_plan(
        ledger, version=version, writers_end_within=writers_end_within, max_dates=max_dates
    )
    if planned.plan.partial:
        logger.warning(
            "more dates are pending than one run loads: the rest wait for the next runs",
            extra={
                "dates_planned": len(planned.plan.kpi_dates),
                "max_dates_per_run": max_dates,
                "contents_in_part": len(planned.plan.partial),
            },
        )
    if planned.unloadable:
        logger.warning(
            "pending markers no load can clear were removed (an ingest that died before "
            "accepting its file, or content without a valid play)",
            extra={"contents": planned.unloadable},
        )
        ledger.remove_pending(planned.unloadable)
    return planned.plan


def _plan_range(
    request: TransformRequest, ledger: Ledger, version: int
) -> tuple[LoadPlan, RecomputeReport]:
    """A recompute: every date of the range with an accepted play, from all of them; with
    ``catalogue: current``, each re-pinned to this run's snapshot first. Pending markers
    stay (a daily run loads their dates again: the same KPIs)."""
    options = request.request
    assert options.date_from is not None and options.date_to is not None  # CheckRequest's
    days = (options.date_to - options.date_from).days + 1
    dates = [options.date_from + dt.timedelta(days=n) for n in range(days)]
    accepted = ledger.accepted_by_date(dates)
    contents = {d: keys for d, keys in accepted.items() if keys}
    storage, layout = ledger.storage, ledger.layout
    details_key = layout.recompute_details_key(request.run_id)
    # What each date was pinned to before, written before any pin changes: a retry (or a
    # plan made again) finds its dates pinned to this run already, and keeps the first
    # attempt's answer.
    earlier = storage.get_json(layout.data_bucket, details_key) or {}
    repinned: dict[str, str | None] = {}
    not_ours: list[dt.date] = []  # the dates a pin is written for (a retry's are ours)
    if options.catalogue == "current":
        before = earlier.get("repinned_from", {})
        pins = read_pins(storage, layout, sorted(contents))
        for kpi_date in sorted(contents):
            pin, day = pins.get(kpi_date), kpi_date.isoformat()
            if pin is not None and pin.pinned_by_run == request.run_id:
                repinned[day] = before.get(day)
            else:
                repinned[day] = pin.pinned_by_run if pin else before.get(day)
                not_ours.append(kpi_date)
    without_plays = [d.isoformat() for d in dates if d not in contents]
    details = {"dates_without_plays": without_plays, "repinned_from": repinned}
    storage.put_json(layout.data_bucket, details_key, details)
    repin_dates(storage, layout, not_ours, request.run_id, request.snapshot)
    report = RecomputeReport(
        date_from=options.date_from,
        date_to=options.date_to,
        catalogue=options.catalogue,
        dates_without_plays=len(without_plays),
        repinned=len(repinned),
        details_key=details_key,
    )
    logger.info(
        "recompute planned",
        extra={"dates": len(contents), "without_plays": len(without_plays)},
    )
    return LoadPlan(contents, pending=[], version=version), report


def _written_before_copy_format(ledger: Ledger, plan: LoadPlan) -> set[dt.date]:
    """The dates with a curated object or a catalogue written before the Parquet that
    Redshift's COPY reads (an upgraded deployment's older data): never sent to COPY."""
    if not plan.kpi_dates:
        return set()
    entries = ledger.entries(k for keys in plan.contents_by_date.values() for k in keys)
    pins = read_pins(ledger.storage, ledger.layout, plan.kpi_dates)
    older = set()
    for kpi_date, contents in plan.contents_by_date.items():
        pin = pins.get(kpi_date)
        formats = [int(entries.get(c, {}).get("copy_format", 1)) for c in contents]
        if pin is None or pin.copy_format < COPY_FORMAT or min(formats, default=1) < COPY_FORMAT:
            older.add(kpi_date)
    return older


def plays_by_date(ledger: Ledger, plan: LoadPlan) -> dict[dt.date, int]:
    """Each date's accepted plays, added up from the ledger entries the plan lists (an
    entry written before per-date counts existed counts all its plays for each date: the
    larger figure, so a big day is never sent to the smaller engine)."""
    entries = ledger.entries(k for keys in plan.contents_by_date.values() for k in keys)
    totals = {}
    for kpi_date, contents in plan.contents_by_date.items():
        day = kpi_date.isoformat()
        totals[kpi_date] = sum(
            int(entries[c].get("plays_by_date", {}).get(day, entries[c].get("plays_valid", 0)))
            for c in contents
            if c in entries
        )
    return totals


@dataclass(frozen=True)
class PlannedDate:
    """One date of a plan, as a TransformDates item computes it."""

    kpi_date: dt.date
    contents: list[str]  # exactly the curated objects the plan lists for it
    songs_key: str  # the catalogue it is pinned to


def planned_date(request: TransformDateRequest, *, storage: Storage, layout: Layout) -> PlannedDate:
    """The date of ``request`` in its run's plan, which must be the plan it was made from."""
    kpi_date = request.kpi_date
    plan = read_plan(storage, layout, request.run_id)
    if plan is None or plan.version != request.plan_version:
        found = "no plan" if plan is None else f"plan {plan.version}"
        raise DataGateError(
            f"run {request.run_id} has {found}, not plan {request.plan_version}: the dates to "
            "transform come from PlanTransform of the same run"
        )
    contents = plan.contents_by_date.get(kpi_date)
    if not contents:
        raise DataGateError(f"{kpi_date} is not in plan {plan.version} of run {request.run_id}")
    pin = read_pins(storage, layout, [kpi_date]).get(kpi_date)
    if pin is None:
        raise DataGateError(f"{kpi_date} has no catalogue pin: PlanTransform pins every date")
    return PlannedDate(kpi_date, contents, pin.songs_key)


def transform_totals(
    planned: TransformResult, run_id: str, *, storage: Storage, layout: Layout
) -> TransformResult:
    """The plan with the figures of every date it computed added up (the run summary's)."""
    if planned.attempt is None:
        return planned
    attempt = planned.attempt
    documents = parallel(
        lambda d: storage.get_json(
            layout.data_bucket, layout.transform_result_key(run_id, attempt, d)
        ),
        planned.kpi_dates,
    )
    missing = [
        d.isoformat() for d, doc in zip(planned.kpi_dates, documents, strict=True) if not doc
    ]
    if missing:
        raise FileNotFoundError(f"no Transform result for {missing[:5]} (attempt {attempt})")
    results = [TransformDateResult.model_validate(doc) for doc in documents]
    plays = sum(r.plays_in_kpis for r in results)
    return planned.model_copy(
        update={
            "genre_rows": sum(r.genre_rows for r in results),
            "hourly_rows": sum(r.hourly_rows for r in results),
            "plays_in_kpis": plays,
            "duplicates_across_files": sum(r.curated_rows for r in results) - plays,
            "plays_without_song": sum(r.plays_without_song for r in results),
        }
    )
