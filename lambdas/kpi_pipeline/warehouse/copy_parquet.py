"""What Redshift's ``COPY ... FORMAT AS PARQUET`` reads, as the pipeline relies on it.

Every Parquet file COPY reads (curated plays, the catalogue's song_tracks and song_artists,
the KPI parts) is written within these rules, and the local warehouse refuses a file
outside them, as Redshift would (or might: where its documentation is silent, the rule is
the narrower one):

- columns by position, as many in the file as in the table (Redshift Developer Guide,
  "COPY from columnar data formats");
- compression inside the file: Snappy (the row-group codec the Spectrum and UNLOAD pages
  name), gzip or none; never ZSTD, LZ4 or Brotli, which no Redshift page documents;
- each column's Parquet type one that Redshift maps to the table column's type, from the
  only mapping table Redshift publishes for Parquet data files (Spectrum's Iceberg types,
  docs.aws.amazon.com/redshift/latest/dg/querying-iceberg-supported-data-types.html):
  int -> INTEGER, long -> BIGINT, double -> DOUBLE PRECISION, string -> VARCHAR,
  date -> DATE, timestamp without time zone -> TIMESTAMP (a UTC-adjusted timestamp has no
  Redshift type there), boolean -> BOOLEAN;
- strings no longer than their VARCHAR column, in bytes: COPY from Parquet cannot
  truncate (TRUNCATECOLUMNS is not among its parameters).

No third-party import at module level: the rules are data; :func:`refusal` reads a file's
metadata with pyarrow, which only the local warehouse and the tests load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CODECS = frozenset({"SNAPPY", "GZIP", "UNCOMPRESSED"})
# The version of these rules a file was written by, recorded in the ledger entries of
# curated plays and in catalogue pins: files of an earlier version (ZSTD, a UTC-adjusted
# listen_time, names longer than 255 bytes) are computed by the Lambda engine, never COPYed.
COPY_FORMAT = 2
WRITE_CODEC = "snappy"  # what every writer of a file COPY reads uses (pyarrow)
DUCKDB_PARQUET = "(FORMAT parquet, COMPRESSION snappy)"  # the same, for DuckDB's COPY

# Redshift column type (normalised) -> the Parquet (physical type, logical type) it reads.
_INT32 = {("INT32", "NONE"), ("INT32", "INT(32,true)")}
_INT64 = {("INT64", "NONE"), ("INT64", "INT(64,true)")}
TYPES: dict[str, set[tuple[str, str]]] = {
    "INTEGER": _INT32,
    "BIGINT": _INT64,
    "DOUBLE PRECISION": {("DOUBLE", "NONE")},
    "VARCHAR": {("BYTE_ARRAY", "STRING")},
    "DATE": {("INT32", "DATE")},
    "TIMESTAMP": {("INT64", "TIMESTAMP(false,micros)"), ("INT64", "TIMESTAMP(false,millis)")},
    "BOOLEAN": {("BOOLEAN", "NONE")},
}
_ALIASES = {"INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT", "FLOAT": "DOUBLE PRECISION"}
_VARCHAR = re.compile(r"^VARCHAR\((\d+)\)")


def redshift_type(sql_type: str) -> tuple[str, int | None]:
    """``VARCHAR(255) COLLATE ...`` -> ("VARCHAR", 255); ``FLOAT`` -> ("DOUBLE PRECISION",
    None)."""
    text = " ".join(sql_type.upper().split())
    if match := _VARCHAR.match(text):
        return "VARCHAR", int(match.group(1))
    text = text.split(" NOT NULL")[0]
    return _ALIASES.get(text, text), None


def refusal(path: Path, columns: list[tuple[str, str]], url: str) -> str | None:
    """Why COPY would refuse the Parquet file at ``path`` for a table of ``columns`` (name,
    SQL type) in order, or None. ``url`` names the file in the message."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema
    if len(schema) != len(columns):
        return (
            f"{url} has {len(schema)} columns and the table {len(columns)}: COPY reads "
            "Parquet by position, as many columns as the table has"
        )
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        for index in range(metadata.num_columns):
            codec = metadata.row_group(group).column(index).compression
            if codec not in CODECS:
                return (
                    f"{url} column {schema.column(index).name} is compressed with {codec}: "
                    f"Redshift documents {', '.join(sorted(CODECS))} for Parquet"
                )
    table = None
    for index, (name, sql_type) in enumerate(columns):
        column = schema.column(index)
        kind, width = redshift_type(sql_type)
        found = (column.physical_type, _logical(column.logical_type))
        if found not in TYPES.get(kind, set()):
            return (
                f"{url} column {index + 1} ({column.name}) is Parquet {found[0]} {found[1]}, "
                f"which Redshift does not read into {name} {kind}"
            )
        if width is not None:
            table = table if table is not None else parquet.read()
            longest = pc.max(pc.binary_length(table.column(index))).as_py() or 0
            if longest > width:
                return (
                    f"{url} column {index + 1} ({column.name}) holds a value of {longest} bytes:"
                    f" {name} is VARCHAR({width}) and COPY from Parquet cannot truncate"
                )
    return None


def _logical(logical_type: Any) -> str:
    kind = str(logical_type.type)
    if kind == "INT":
        details = json.loads(logical_type.to_json())
        return f"INT({details.get('bitWidth')},{str(details.get('isSigned')).lower()})"
    if kind == "TIMESTAMP":
        details = json.loads(logical_type.to_json())
        unit = {"microseconds": "micros", "milliseconds": "millis"}.get(
            str(details.get("timeUnit")), str(details.get("timeUnit"))
        )
        return f"TIMESTAMP({str(details.get('isAdjustedToUTC')).lower()},{unit})"
    return kind
