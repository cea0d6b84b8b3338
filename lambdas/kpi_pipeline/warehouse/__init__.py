"""The KPI warehouse: one interface, two adapters (Redshift Data API, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from kpi_pipeline.settings import WarehouseSettings


@dataclass(frozen=True)
class KpiBatch:
    """The KPI rows of one run: Parquet parts under a key prefix in S3."""

    bucket: str
    prefix: str  # COPY reads every object whose key starts with it
    kpi_dates: list[dt.date]


class Warehouse(Protocol):
    """Replace the KPI rows of some dates in one transaction."""

    def replace_dates(self, batch: KpiBatch, loaded_at: dt.datetime) -> int:
        """Create the table if needed, delete the batch's dates, insert its rows.

        All of it commits together or not at all; returns the number of rows inserted.
        """
        ...


def open_warehouse(settings: WarehouseSettings) -> Warehouse:
    """The adapter that ``settings.warehouse_kind`` names."""
    if settings.warehouse_kind == "redshift":
        from kpi_pipeline.warehouse.redshift import RedshiftDataApiWarehouse

        return RedshiftDataApiWarehouse(settings)
    from kpi_pipeline.warehouse.postgres import PostgresWarehouse

    return PostgresWarehouse(settings)
