"""What of the source was processed: each table's mark, in the pipeline's own state in S3
(``source/state.json``), never in the operational database (the pipeline only reads RDS).

A mark holds the table's watermark (its change column's largest value when it was read),
the raw snapshot that read produced (the next incremental read's base), when the table was
last read whole, and the run that used it. ExtractRds reads the marks; Archive writes them
once the run is through (its load committed, or nothing was left to load), so a run that
fails before reads the same changes again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from kpi_pipeline.contracts import SourceSnapshot
from kpi_pipeline.errors import CorruptObject
from kpi_pipeline.layout import Layout
from kpi_pipeline.observability import logger
from kpi_pipeline.storage import Storage


@dataclass(frozen=True)
class TableMark:
    raw_key: str
    full_at: str  # ISO 8601, UTC
    watermark: str | None = None
    changed_column: str | None = None
    run_id: str = ""
    columns: tuple[str, ...] = ()  # the raw snapshot's columns, in order
    key_unique: bool = False


def read_marks(
    storage: Storage, layout: Layout, *, full_extract: bool = False
) -> dict[str, TableMark]:
    """The tables' marks. A marks document that cannot be read fails the run, saying what to
    do, unless the run reads every table whole anyway ({"full_extract": true}): that run
    needs no mark, and writes a new document."""
    try:
        document = storage.get_json(layout.data_bucket, layout.source_state_key) or {}
    except CorruptObject as exc:
        if full_extract:
            logger.warning(
                "the source marks cannot be read: this full read replaces them",
                extra={"problem": str(exc)},
            )
            return {}
        raise CorruptObject(
            f'{exc}; or start an execution with {{"full_extract": true}}: it reads every '
            "source table whole and writes new marks"
        ) from exc
    return {
        table: TableMark(
            raw_key=str(mark["raw_key"]),
            full_at=str(mark["full_at"]),
            watermark=mark.get("watermark"),
            changed_column=mark.get("changed_column"),
            run_id=str(mark.get("run_id", "")),
            columns=tuple(mark.get("columns", ())),
            key_unique=bool(mark.get("key_unique", False)),
        )
        for table, mark in document.get("tables", {}).items()
    }


def mark_processed(storage: Storage, layout: Layout, source: SourceSnapshot, run_id: str) -> None:
    """Record the run's reads as the tables' marks (a retry writes the same document)."""
    if not source.tables:
        return
    document = {
        "tables": {
            table: {
                "raw_key": read.raw_key,
                "full_at": read.full_at,
                "watermark": read.watermark,
                "changed_column": read.changed_column,
                "mode": read.mode,
                "columns": read.columns,
                "key_unique": read.key_unique,
                "run_id": run_id,
            }
            for table, read in sorted(source.tables.items())
        },
        "marked_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    storage.put_json(layout.data_bucket, layout.source_state_key, document)
