"""The KPI warehouse: one interface, two adapters (Redshift Data API, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from kpi_pipeline.settings import WarehouseSettings
from kpi_pipeline.warehouse.schema import StageBatch


@dataclass(frozen=True)
class KpiBatch:
    """The KPI rows of one run: Parquet parts under a key prefix in S3 (dates computed in a
    Lambda), and batches of the stage table (dates the warehouse computed)."""

    bucket: str
    prefix: str  # COPY reads every object whose key starts with it
    kpi_dates: list[dt.date]  # every date replaced, whichever engine computed it
    has_parts: bool = True  # False: every date was computed in the warehouse
    stage_batches: tuple[StageBatch, ...] = ()  # the stage table's batches to take
    # The lock's fencing token of the run loading (None outside the state machine): the
    # load commits only if no run with a newer token loaded before it.
    fence: int | None = None
    run_id: str = ""


@dataclass(frozen=True)
class DateJob:
    """One date for the warehouse engine: its inputs, listed object by object in COPY
    manifests, and how its rows are stamped in the stage table."""

    kpi_date: dt.date
    run_id: str
    bucket: str
    manifests: dict[str, str]  # input table (kpi_sql.INPUT_TABLES) -> manifest key
    attempt: str  # the plan's attempt
    work_id: str  # the date of the attempt (32 hex digits): its batches' ClientToken base


class Warehouse(Protocol):
    """Compute a date's KPIs in the warehouse; replace the KPI rows of some dates."""

    def replace_dates(self, batch: KpiBatch, loaded_at: dt.datetime) -> int:
        """Delete the batch's dates, insert its parts' rows and its stage batches' rows,
        clear the stage rows of its dates.

        All of it commits together or not at all; returns the number of rows inserted.
        """
        ...

    def compute_date(self, job: DateJob) -> tuple[dict[str, int], str]:
        """In one transaction: COPY the job's manifests into temporary tables, add the
        date's KPI rows to the stage table as a batch of its own; return the figures
        (kpi_sql.FIGURES) and the id of the batch that committed."""
        ...

    # --- the preflight: tried with the step's own identity, nothing kept --------------------

    def values(self, expressions: dict[str, str]) -> dict[str, Any]:
        """One row of named SQL values (``has_table_privilege(...)``, ``db_collation()``)."""
        ...

    def preflight_compute(self, job: DateJob) -> list[dict[str, Any]]:
        """The date's KPI rows computed as ``compute_date`` computes them, kept nowhere."""
        ...

    def preflight_copy_parts(self, batch: KpiBatch) -> int:
        """The rows the load's COPY reads from the batch's parts, loaded nowhere."""
        ...


def open_warehouse(settings: WarehouseSettings) -> Warehouse:
    """The adapter that ``settings.warehouse_kind`` names."""
    if settings.warehouse_kind == "redshift":
        from kpi_pipeline.warehouse.redshift import RedshiftDataApiWarehouse

        return RedshiftDataApiWarehouse(settings)
    from kpi_pipeline.warehouse.postgres import PostgresWarehouse

    return PostgresWarehouse(settings)
