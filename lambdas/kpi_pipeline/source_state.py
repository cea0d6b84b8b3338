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
from typing import Any

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
    """The tables' marks. A marks document that cannot be read (not JSON, or not the shape
    written here) fails the run, saying what to do, unless the run reads every table whole
    anyway ({"full_extract": true}): that run needs no mark, and writes a new document."""
    try:
        return _marks(storage.get_json(layout.data_bucket, layout.source_state_key) or {})
    except (CorruptObject, AttributeError, KeyError, TypeError, ValueError) as exc:
        where = f"s3://{layout.data_bucket}/{layout.source_state_key}"
        problem = str(exc) if isinstance(exc, CorruptObject) else f"{where} is not marks: {exc!r}"
        if full_extract:
            logger.warning(
                "the source marks cannot be read: this full read replaces them",
                extra={"problem": problem},
            )
            return {}
        raise CorruptObject(
            f'{problem}; start an execution with {{"full_extract": true}}: it reads every '
            "source table whole and writes new marks"
        ) from exc


def _marks(document: dict[str, Any]) -> dict[str, TableMark]:
    return (
        {
            str(table): TableMark(
                raw_key=str(mark["raw_key"]),
                full_at=dt.datetime.fromisoformat(str(mark["full_at"])).isoformat(),
                watermark=mark.get("watermark"),
                changed_column=mark.get("changed_column"),
                run_id=str(mark.get("run_id", "")),
                columns=tuple(str(c) for c in mark.get("columns", ())),
                key_unique=bool(mark.get("key_unique", False)),
            )
            for table, mark in document["tables"].items()
        }
        if document
        else {}
    )


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
