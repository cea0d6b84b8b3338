"""The warehouse schema on the Arrow side: the KPI Parquet's exact types, and fitting to them.

Only the steps that run with pyarrow import this (Transform, and the local PostgreSQL
adapter); the schema itself is :mod:`kpi_pipeline.warehouse.schema`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from kpi_pipeline.warehouse.schema import KPI_COLUMNS, truncate_utf8

KPI_SCHEMA = pa.schema([(c.name, getattr(pa, c.arrow_type)()) for c in KPI_COLUMNS])


def fit_to_schema(table: pa.Table) -> pa.Table:
    """Cast to the KPI schema and cut strings longer than their column to fit."""
    table = table.select([c.name for c in KPI_COLUMNS]).cast(KPI_SCHEMA)
    for column in KPI_COLUMNS:
        if column.max_bytes is None:
            continue
        values = table.column(column.name)
        too_long = pc.greater(pc.binary_length(values), column.max_bytes)
        if not pc.any(too_long).as_py():
            continue
        fitted = [
            None if value is None else truncate_utf8(value, column.max_bytes)
            for value in values.to_pylist()
        ]
        index = table.schema.get_field_index(column.name)
        table = table.set_column(index, column.name, pa.array(fitted, type=pa.string()))
    return table
