"""Validation of one stream CSV file, per the "Valid plays" section of docs/kpis.md.

A file is either rejected whole (:class:`RejectedFile`, with its reason) or accepted
(:class:`AcceptedFile`): its valid plays, de-duplicated, are written as one Parquet file
per ``kpi_date``, and every other row goes to a quarantine Parquet file with its reason.
Nothing is dropped silently. Reading streams through pyarrow in blocks and DuckDB spills,
so a file larger than memory is fine.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kpi_pipeline.engine import create_table, create_view, literal, scalar
from kpi_pipeline.reasons import FileReason, RowReason
from kpi_pipeline.warehouse import copy_parquet

REQUIRED_COLUMNS = ("user_id", "track_id", "listen_time")
ASCII_WHITESPACE = " \t\r\n\f\v"  # what "surrounding whitespace" means, here and in SQL
_BLOCK_SIZE = 16 * 1024 * 1024
_CSV_BLOCK_SIZE = 4 * 1024 * 1024  # small batches: DuckDB parses them on every core
_HEADER_PROBE_BYTES = 1024 * 1024
_SPOOL_BYTES = 4 * 1024 * 1024  # malformed rows held in memory before they go to disk
_BOM = codecs.BOM_UTF8


@dataclass(frozen=True)
class RejectedFile:
    reason: FileReason
    detail: str


@dataclass(frozen=True)
class AcceptedFile:
    plays_by_date: dict[dt.date, Path]
    plays_valid: int
    duplicates: int
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_path: Path | None = None
    plays_per_date: dict[dt.date, int] = field(default_factory=dict)

    @property
    def kpi_dates(self) -> list[dt.date]:
        return sorted(self.plays_by_date)


@dataclass(frozen=True)
class Lineage:
    """Where rows came from; written beside every curated and quarantined row."""

    source_key: str
    content_key: str
    run_id: str


@dataclass(frozen=True)
class Snapshot:
    """A source snapshot, as local Parquet files: the users and songs rows are checked with."""

    users_parquet: Path
    songs_parquet: Path


# The snapshot each date's rows are checked with (see kpi_pipeline.catalogue).
SnapshotsOfDates = Callable[[list[dt.date]], dict[dt.date, Snapshot]]


def validate_stream_file(
    csv_path: Path,
    *,
    snapshots: Snapshot | SnapshotsOfDates,
    lineage: Lineage,
    out_dir: Path,
    con: duckdb.DuckDBPyConnection,
) -> RejectedFile | AcceptedFile:
    """Validate one stream file; each row against the users and songs snapshot of its date.

    ``snapshots`` is one snapshot for every date, or a function giving each date's: it is
    called once, with the dates of the rows whose ``listen_time`` parses.
    """
    rejected = _inspect_bytes(csv_path)
    if rejected:
        return rejected
    header = _read_header(csv_path)
    if isinstance(header, RejectedFile):
        return header
    columns = _resolve_columns(header)
    if isinstance(columns, RejectedFile):
        return columns

    out_dir.mkdir(parents=True, exist_ok=True)
    malformed = MalformedRows(out_dir / "malformed_rows.parquet")
    try:
        # Parsed as it streams in: the text rows are never held as a table of their own.
        con.register("raw_rows", _open_rows(csv_path, columns, malformed))
        create_table(con, "parsed_rows", "ingest/parse_stream_rows.sql")
        con.unregister("raw_rows")
    except (pa.ArrowInvalid, duckdb.Error) as exc:
        return RejectedFile(FileReason.UNREADABLE_CSV, _first_line(exc))
    finally:
        malformed.close()
        # The CSV blocks DuckDB has copied are free, but pyarrow's pool (mimalloc) keeps
        # their pages (some 180 MB on a bench file) while the plays are de-duplicated.
        pa.default_memory_pool().release_unused()

    dates = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT kpi_date FROM parsed_rows WHERE kpi_date IS NOT NULL"
        ).fetchall()
    ]
    by_date = snapshots(sorted(dates)) if callable(snapshots) else dict.fromkeys(dates, snapshots)
    register_snapshots(con, by_date)
    create_view(con, "classified_rows", "ingest/classify_stream_rows.sql")
    return _write_outputs(con, malformed, lineage, out_dir)


def register_snapshots(
    con: duckdb.DuckDBPyConnection,
    by_date: dict[dt.date, Snapshot],
    *,
    only_named: bool = False,
) -> None:
    """known_users(snapshot, user_id), known_tracks(snapshot, track_id) and each date's
    snapshot (date_snapshots), numbered in the order they first appear. ``only_named``:
    only the users and tracks ``parsed_rows`` names (what a check of them can find)."""
    users_named = " AND user_id IN (SELECT user_id FROM parsed_rows)" if only_named else ""
    tracks_named = " AND track_id IN (SELECT track_id_text FROM parsed_rows)" if only_named else ""
    numbers: dict[Snapshot, int] = {}
    for snapshot in by_date.values():
        numbers.setdefault(snapshot, len(numbers))
    con.execute("CREATE TEMP TABLE known_users (snapshot INTEGER, user_id BIGINT)")
    con.execute("CREATE TEMP TABLE known_tracks (snapshot INTEGER, track_id VARCHAR)")
    for snapshot, number in numbers.items():
        con.execute(
            "INSERT INTO known_users SELECT DISTINCT ?, user_id "
            f"FROM read_parquet({literal(snapshot.users_parquet)}) WHERE true{users_named}",
            [number],
        )
        con.execute(
            "INSERT INTO known_tracks SELECT DISTINCT ?, track_id "
            f"FROM read_parquet({literal(snapshot.songs_parquet)}) WHERE true{tracks_named}",
            [number],
        )
    con.execute("CREATE TEMP TABLE date_snapshots (kpi_date DATE, snapshot INTEGER)")
    if by_date:
        con.executemany(
            "INSERT INTO date_snapshots VALUES (?, ?)",
            [(d, numbers[snapshot]) for d, snapshot in by_date.items()],
        )


def _write_outputs(
    con: duckdb.DuckDBPyConnection, malformed: MalformedRows, lineage: Lineage, out_dir: Path
) -> AcceptedFile:
    """The quarantined rows, then the valid plays: each a single pass over the rows."""
    create_table(con, "quarantined", "ingest/quarantined_rows.sql")
    counts = dict(
        con.execute("SELECT reason, count(*) FROM quarantined GROUP BY reason").fetchall()
    )
    valid_rows = scalar(con, "SELECT count(*) FROM parsed_rows") - sum(counts.values())
    if malformed.count:
        counts[RowReason.MALFORMED_ROW.value] = malformed.count
    plays_by_date, plays_per_date = _write_plays(con, lineage, out_dir)
    plays_valid = sum(plays_per_date.values())

    quarantine_path = None
    if counts:
        quarantine_path = out_dir / "quarantined_rows.parquet"
        _write_quarantine(con, malformed, lineage, quarantine_path)
    return AcceptedFile(
        plays_by_date=plays_by_date,
        plays_valid=plays_valid,
        duplicates=valid_rows - plays_valid,
        rows_quarantined={str(k): int(v) for k, v in sorted(counts.items())},
        quarantine_path=quarantine_path,
        plays_per_date=plays_per_date,
    )


def _write_quarantine(
    con: duckdb.DuckDBPyConnection, malformed: MalformedRows, lineage: Lineage, path: Path
) -> None:
    """One Parquet file of the quarantined rows: those with a reason of their own in record
    order, then the malformed rows as read, copied from the spool a row group at a time
    (never held whole, in memory or in DuckDB)."""
    lineage_values = {
        "source_key": lineage.source_key,
        "content_key": lineage.content_key,
        "run_id": lineage.run_id,
    }
    rows = con.sql(
        "SELECT *, ? AS source_key, ? AS content_key, ? AS run_id "
        "FROM quarantined ORDER BY record_number",
        params=list(lineage_values.values()),
    ).to_arrow_reader(64 * 1024)
    schema = rows.schema
    constants = {**lineage_values, "reason": RowReason.MALFORMED_ROW.value}
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in rows:
            writer.write_batch(batch)
        for raw in malformed.batches():
            writer.write_batch(_as_quarantined(raw, schema, constants))


def _as_quarantined(
    raw: pa.RecordBatch, schema: pa.Schema, constants: dict[str, str]
) -> pa.RecordBatch:
    """Malformed rows (raw_record) in the quarantine's columns: no values of their own."""

    def column(field: pa.Field) -> pa.Array:
        if field.name == "raw_record":
            return raw.column("raw_record")
        if field.name in constants:
            return pa.repeat(constants[field.name], raw.num_rows).cast(field.type)
        return pa.nulls(raw.num_rows, type=field.type)

    return pa.record_batch([column(field) for field in schema], schema=schema)


def _write_plays(
    con: duckdb.DuckDBPyConnection, lineage: Lineage, out_dir: Path
) -> tuple[dict[dt.date, Path], dict[dt.date, int]]:
    """One Parquet file of de-duplicated valid plays per kpi_date; and how many each holds."""
    # Every row the quarantine does not hold is valid (no second classification), and rows
    # repeating (user_id, track_id, listen_time) are one play (docs/kpis.md).
    con.execute(
        """
        CREATE TEMP VIEW valid_rows AS
        SELECT user_id, track_id_text AS track_id, listen_time, kpi_date
        FROM parsed_rows
        ANTI JOIN quarantined ON parsed_rows.record_number = quarantined.record_number
        """
    )
    plays_by_date: dict[dt.date, Path] = {}
    plays: dict[dt.date, int] = {}
    dates = [row[0] for row in con.execute("SELECT DISTINCT kpi_date FROM valid_rows").fetchall()]
    for kpi_date in sorted(dates):
        path = out_dir / f"plays_{kpi_date.isoformat()}.parquet"
        # COPY de-duplicates as it writes (a date's plays are never materialised twice),
        # and answers with the number of rows written.
        plays[kpi_date] = copy_plays(
            con,
            "SELECT DISTINCT * FROM valid_rows WHERE kpi_date = ?",
            [kpi_date],
            lineage.content_key,
            path,
        )
        plays_by_date[kpi_date] = path
    return plays_by_date, plays


def copy_plays(
    con: duckdb.DuckDBPyConnection,
    plays_sql: str,
    params: list[object],
    content_key: str,
    path: Path,
) -> int:
    """Write the curated plays ``plays_sql`` selects (user_id, track_id, listen_time as UTC
    wall time, kpi_date; each play once) to ``path`` as one content's Parquet, in the
    curated plays' columns; return how many were written.

    Written as Redshift's COPY reads it (the warehouse engine COPYs these files): Snappy,
    and listen_time a timestamp without time zone (the UTC wall time), a type Redshift maps
    to TIMESTAMP (kpi_pipeline.warehouse.copy_parquet)."""
    written = con.execute(
        f"""
        COPY (
            SELECT
                CAST(user_id AS BIGINT) AS user_id,
                CAST(track_id AS VARCHAR) AS track_id,
                CAST(listen_time AS TIMESTAMP) AS listen_time,
                CAST(kpi_date AS DATE) AS kpi_date,
                CAST(? AS VARCHAR) AS content_key
            FROM ({plays_sql})
        ) TO {literal(path)} {copy_parquet.DUCKDB_PARQUET}
        """,
        [content_key, *params],
    ).fetchone()
    return int(written[0]) if written else 0


def _inspect_bytes(path: Path) -> RejectedFile | None:
    """File-level checks that need every byte: UTF-8, emptiness, CSV quoting."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    has_quotes = False
    blank = True
    offset = 0
    with path.open("rb") as raw:
        while chunk := raw.read(_BLOCK_SIZE):
            # The bytes of a character the last block cut, held by the decoder: a block of
            # ASCII after none needs no decoding (most files are ASCII: 10x cheaper).
            pending = len(decoder.getstate()[0])
            if pending or not chunk.isascii():
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    return RejectedFile(
                        FileReason.NOT_UTF8,
                        f"invalid UTF-8 at byte {offset - pending + exc.start}",
                    )
            has_quotes = has_quotes or b'"' in chunk
            blank = blank and not chunk.removeprefix(_BOM if offset == 0 else b"").strip()
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return RejectedFile(FileReason.NOT_UTF8, "file ends inside a UTF-8 character")
    if blank:
        return RejectedFile(FileReason.EMPTY_FILE, "the file has no header row")
    return _check_quoting(path) if has_quotes else None


def _check_quoting(path: Path) -> RejectedFile | None:
    """A quoted field that never closes, or text right after a closing quote, breaks CSV.

    Parsed strictly (RFC 4180), such a file has no reliable field boundaries: the rest of
    it would be read as one value, so it is quarantined whole. A quote inside an unquoted
    field (``12" speaker``) is plain text and fine. Only files with a quote are parsed here.
    """
    with path.open(encoding="utf-8-sig", newline="") as text:
        try:
            for _ in csv.reader(text, strict=True):
                pass
        except csv.Error as exc:
            return RejectedFile(FileReason.UNREADABLE_CSV, f"broken quoting: {exc}")
    return None


def _read_header(path: Path) -> list[str] | RejectedFile:
    """The first non-empty record, as written (a UTF-8 byte order mark is dropped)."""
    with path.open("rb") as raw:
        probe = raw.read(_HEADER_PROBE_BYTES)
    text = probe.decode("utf-8-sig", errors="ignore")
    try:
        for record in csv.reader(io.StringIO(text, newline="")):
            # Only a truly empty line is skipped, as pyarrow does: a line of spaces or
            # commas is the header pyarrow reads. Skipping it here too made the two
            # disagree on the header, and the file crashed with ArrowKeyError instead of
            # being quarantined for missing_columns.
            if record:
                return record
    except csv.Error as exc:
        return RejectedFile(FileReason.UNREADABLE_CSV, f"header: {exc}")
    return RejectedFile(FileReason.MISSING_COLUMNS, "no header row in the first megabyte")


def _resolve_columns(header: list[str]) -> dict[str, str] | RejectedFile:
    """Map each required column to its name in the file (trimmed, case-insensitive)."""
    found: dict[str, list[str]] = {name: [] for name in REQUIRED_COLUMNS}
    for name in header:
        key = name.strip(ASCII_WHITESPACE).lower()
        if key in found:
            found[key].append(name)
    missing = [name for name, names in found.items() if not names]
    if missing:
        return RejectedFile(
            FileReason.MISSING_COLUMNS,
            f"header lacks {', '.join(missing)} (has: {', '.join(header)[:200]})",
        )
    repeated = [name for name, names in found.items() if len(names) > 1]
    if repeated:
        return RejectedFile(FileReason.AMBIGUOUS_COLUMNS, f"repeated: {', '.join(repeated)}")
    return {name: names[0] for name, names in found.items()}


class MalformedRows:
    """The rows whose field count differs from the header's, as read: written to a Parquet
    file as they come, so memory holds a few megabytes of them whatever the file holds (a
    file of nothing else, or a row of 50,000 fields, is bounded like any other)."""

    _SCHEMA = pa.schema([("raw_record", pa.string())])

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._rows: list[str] = []
        self._held = 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, text: str) -> None:
        self._rows.append(text)
        self.count += 1
        self._held += len(text)
        if self._held >= _SPOOL_BYTES:
            self._flush()

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows, in the order read, a row group at a time."""
        if self.count:
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=16 * 1024)

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self._SCHEMA, compression="zstd")
        self._writer.write_table(pa.table({"raw_record": self._rows}, schema=self._SCHEMA))
        self._rows, self._held = [], 0


def _open_rows(
    path: Path, columns: dict[str, str], malformed: MalformedRows
) -> pa.RecordBatchReader:
    """Stream the required columns as text, numbering records; spool malformed rows."""

    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        # A row whose field count differs from the header's: quarantined, never dropped.
        malformed.add(row.text)
        return "skip"

    raw_names = list(columns.values())
    reader = pa_csv.open_csv(
        _with_final_line_break(path),
        read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_SIZE, use_threads=False),
        parse_options=pa_csv.ParseOptions(
            newlines_in_values=True, invalid_row_handler=on_invalid_row
        ),
        convert_options=pa_csv.ConvertOptions(
            include_columns=raw_names,
            column_types={name: pa.string() for name in raw_names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    schema = pa.schema([("record_number", pa.int64())] + [(n, pa.string()) for n in columns])

    def batches() -> Iterator[pa.RecordBatch]:
        seen = 0
        for batch in reader:
            numbers = pa.array(np.arange(seen + 1, seen + batch.num_rows + 1, dtype=np.int64))
            seen += batch.num_rows
            yield pa.record_batch(
                [numbers] + [batch.column(raw) for raw in raw_names], schema=schema
            )

    return pa.RecordBatchReader.from_batches(schema, batches())


def _with_final_line_break(path: Path) -> Path | pa.BufferReader:
    """The file, or its bytes plus a line break if its last line has none.

    pyarrow rejects a header that ends the file without a line break ("Empty CSV file"),
    yet ``user_id,track_id,listen_time`` alone is a valid CSV file with no rows. Only a
    small file can end on its header (the header is within the first megabyte), so only
    a small file is read into memory; a larger one ends on a data row, which pyarrow reads.
    """
    if path.stat().st_size > _HEADER_PROBE_BYTES:
        return path
    data = path.read_bytes()
    return path if data.endswith((b"\n", b"\r")) else pa.BufferReader(data + b"\n")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
