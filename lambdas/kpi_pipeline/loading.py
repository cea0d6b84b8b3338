"""Load: replace the touched dates in the warehouse, then record what was loaded.

Right before the commit, the run's plan must still cover every content accepted for its
dates (:func:`kpi_pipeline.planning.check_still_covers`). After the warehouse commits,
every accepted content the load covered is marked loaded in the ledger and its pending
marker is removed, so later runs do not recompute its dates. A failure before that point
leaves the markers: the next run loads those dates again.
"""

from __future__ import annotations

import datetime as dt

from kpi_pipeline.contracts import LoadRequest, LoadResult, TransformDateResult
from kpi_pipeline.errors import DataGateError
from kpi_pipeline.layout import Layout
from kpi_pipeline.ledger import Ledger
from kpi_pipeline.observability import KPI_ROWS_LOADED, count, logger
from kpi_pipeline.parallel import parallel
from kpi_pipeline.planning import LoadPlan, check_still_covers, read_plan
from kpi_pipeline.storage import Storage
from kpi_pipeline.warehouse import KpiBatch, Warehouse
from kpi_pipeline.warehouse.schema import StageBatch


def load_kpis(
    request: LoadRequest, *, warehouse: Warehouse, storage: Storage, layout: Layout
) -> LoadResult:
    plan = read_plan(storage, layout, request.run_id)
    if plan is None:
        raise FileNotFoundError(f"the load plan of run {request.run_id} is missing")
    if request.plan_version is not None and plan.version != request.plan_version:
        # The markers cleared after the commit are the plan's: they must be the parts'.
        raise DataGateError(
            f"the KPI parts come from plan {request.plan_version} of run {request.run_id}, "
            f"but its plan is now {plan.version}: nothing was replaced"
        )
    if request.attempt and request.kpi_prefix != layout.kpi_prefix(request.run_id, request.attempt):
        # Every name and key Load uses comes from its own run and attempt.
        raise DataGateError(
            f"the KPI prefix {request.kpi_prefix!r} is not the one of run {request.run_id}, "
            f"attempt {request.attempt}: nothing was replaced"
        )
    ledger = Ledger(storage, layout)
    check_still_covers(plan, ledger)
    in_warehouse = _warehouse_dates(storage, layout, request)
    in_lambda = [d for d in request.kpi_dates if d not in in_warehouse]
    _check_parts(storage, layout, request.kpi_prefix, in_lambda, len(request.kpi_dates))
    stages = _stage_batches(storage, layout, request, sorted(in_warehouse))
    loaded_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    batch = KpiBatch(
        layout.data_bucket,
        request.kpi_prefix,
        request.kpi_dates,
        has_parts=bool(in_lambda),
        stage_batches=tuple(stages),
        fence=request.lock.fence if request.lock else None,
        run_id=request.run_id,
    )
    rows = warehouse.replace_dates(batch, loaded_at)
    count(KPI_ROWS_LOADED, rows)
    logger.info("KPIs loaded", extra={"rows": rows, "kpi_dates": len(request.kpi_dates)})
    _mark_loaded(ledger, plan, request.run_id)
    return LoadResult(rows_loaded=rows, kpi_dates=request.kpi_dates, loaded_at=loaded_at)


def _warehouse_dates(storage: Storage, layout: Layout, request: LoadRequest) -> set[dt.date]:
    """The dates PlanTransform sent to the warehouse engine (its TransformDates items)."""
    if request.attempt is None:
        return set()
    key = layout.transform_dates_key(request.run_id, request.attempt)
    items = storage.get_json(layout.data_bucket, key)
    if not isinstance(items, list):
        raise DataGateError(f"the planned dates s3://{layout.data_bucket}/{key} are missing")
    return {
        dt.date.fromisoformat(item["kpi_date"])
        for item in items
        if item.get("engine") == "warehouse"
    }


def _check_parts(
    storage: Storage, layout: Layout, kpi_prefix: str, kpi_dates: list[dt.date], total: int
) -> None:
    """Every date computed in a Lambda has its KPI part: the load deletes each date's rows,
    so a date whose part were missing would lose its KPIs instead of getting new ones."""
    if not kpi_dates:
        return
    found = {o.key for o in storage.list_objects(layout.data_bucket, kpi_prefix)}
    missing = [d.isoformat() for d in kpi_dates if layout.kpi_part_key(kpi_prefix, d) not in found]
    if missing:
        raise DataGateError(
            f"no KPI part under s3://{layout.data_bucket}/{kpi_prefix} for {missing[:5]}"
            f" ({len(missing)} of {total} dates): nothing was replaced"
        )


def _stage_batches(
    storage: Storage, layout: Layout, request: LoadRequest, kpi_dates: list[dt.date]
) -> list[StageBatch]:
    """The stage batch of every date computed in the warehouse, from the result each wrote
    once its batch was committed (a date without one would lose its KPIs). Each result is
    read at the key of the load's own run, attempt and date, and checked against its
    contract: a batch id is 32 hex digits, and the result is the warehouse engine's, of
    that date."""
    attempt = request.attempt or ""
    documents = parallel(
        lambda d: storage.get_json(
            layout.data_bucket, layout.transform_result_key(request.run_id, attempt, d)
        ),
        kpi_dates,
    )
    stages, missing = [], []
    for kpi_date, document in zip(kpi_dates, documents, strict=True):
        result = TransformDateResult.model_validate(document) if document else None
        if (
            result is None
            or result.stage_batch is None
            or result.kpi_date != kpi_date
            or result.engine != "warehouse"
        ):
            missing.append(kpi_date.isoformat())
        else:
            rows = result.genre_rows + result.hourly_rows
            stages.append(StageBatch(kpi_date, result.stage_batch, rows))
    if missing:
        raise DataGateError(
            f"no KPIs computed in the warehouse for {missing[:5]} ({len(missing)} of "
            f"{len(request.kpi_dates)} dates): nothing was replaced"
        )
    return stages


def _mark_loaded(ledger: Ledger, plan: LoadPlan, run_id: str) -> None:
    """Every content the plan covered is loaded: its entry says by which run, its marker
    goes. A content the plan took only some dates of keeps its marker, and its entry
    records those dates as loaded (the next plans take the rest)."""
    storage, layout = ledger.storage, ledger.layout

    def mark(content_key: str) -> None:
        entry = ledger.entry(content_key)
        if entry is not None and entry.get("loaded_by_run") != run_id:
            key = layout.ledger_key(content_key)
            storage.put_json(layout.data_bucket, key, {**entry, "loaded_by_run": run_id})

    def mark_part(item: tuple[str, list[dt.date]]) -> None:
        content_key, dates = item
        entry = ledger.entry(content_key)
        if entry is None:
            return
        loaded = sorted({*entry.get("loaded_dates", []), *(d.isoformat() for d in dates)})
        key = layout.ledger_key(content_key)
        storage.put_json(layout.data_bucket, key, {**entry, "loaded_dates": loaded})

    parallel(mark, plan.pending)
    parallel(mark_part, list(plan.partial.items()))
    ledger.remove_pending(plan.pending)
