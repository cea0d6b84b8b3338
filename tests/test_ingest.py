"""Stream-file validation, per the "Valid plays" section of docs/kpis.md.

Each test writes one stream CSV file and the users/songs snapshots, runs
``validate_stream_file`` and checks what it returns and what it wrote: the curated plays
(one Parquet file per kpi_date) and the quarantined rows with their reason and lineage.
A Hypothesis test compares random files against the plain-Python reference.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi_pipeline import ingest
from kpi_pipeline.engine import connect
from kpi_pipeline.ingest import (
    AcceptedFile,
    FileReason,
    Lineage,
    RejectedFile,
    Snapshot,
    validate_stream_file,
)
from kpi_pipeline.settings import EngineSettings
from tests.reference_kpis import classify_row, read_stream_file, strip

USERS = (1, 2, 7)
TRACKS = ("A", "B")
HEADER = "user_id,track_id,listen_time\n"
LINEAGE = Lineage(
    source_key="landing/streams_2024-06-25.csv",
    content_key="sha256-of-the-file",
    run_id="run-2024-06-26",
)
DAY = date(2024, 6, 25)
TEN_UTC = datetime(2024, 6, 25, 10, 0, tzinfo=UTC)


# --- helpers --------------------------------------------------------------------------


def write_snapshots(
    folder: Path, users: Sequence[int] = USERS, tracks: Sequence[str] = TRACKS
) -> tuple[Path, Path]:
    """The users and songs snapshots, as extract writes them (user_id BIGINT, track_id text)."""
    folder.mkdir(parents=True, exist_ok=True)
    users_path, songs_path = folder / "users.parquet", folder / "songs.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(users, pa.int64()),
                "user_name": [f"user {u}" for u in users],
            }
        ),
        users_path,
    )
    pq.write_table(
        pa.table(
            {
                # One track on two genre rows, as in the songs source.
                "track_id": pa.array([*tracks, tracks[0]], pa.string()),
                "track_genre": ["pop"] * len(tracks) + ["dance"],
            }
        ),
        songs_path,
    )
    return users_path, songs_path


def validate(
    folder: Path,
    content: str | bytes,
    *,
    users: Sequence[int] = USERS,
    tracks: Sequence[str] = TRACKS,
    snapshots: tuple[Path, Path] | None = None,
) -> AcceptedFile | RejectedFile:
    """Write ``content`` as a stream file in ``folder`` and validate it (text as UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "streams.csv"
    if isinstance(content, str):
        csv_path.write_text(content, encoding="utf-8", newline="")
    else:
        csv_path.write_bytes(content)
    users_path, songs_path = snapshots or write_snapshots(folder / "snapshots", users, tracks)
    con = connect(EngineSettings(), folder)
    try:
        return validate_stream_file(
            csv_path,
            snapshots=Snapshot(users_path, songs_path),
            lineage=LINEAGE,
            out_dir=folder / "out",
            con=con,
        )
    finally:
        con.close()


def accepted(folder: Path, content: str | bytes, **kwargs: Any) -> AcceptedFile:
    result = validate(folder, content, **kwargs)
    assert isinstance(result, AcceptedFile), result
    return result


def curated(result: AcceptedFile) -> list[dict[str, Any]]:
    """Every curated play of the file, read back from its per-date Parquet files."""
    rows = []
    for kpi_date, path in result.plays_by_date.items():
        table = pq.read_table(path)
        assert table.column_names == [
            "user_id",
            "track_id",
            "listen_time",
            "kpi_date",
            "content_key",
        ]
        # The UTC wall time, without a time zone: what Redshift's COPY reads into TIMESTAMP
        # (a UTC-adjusted Parquet timestamp maps to no Redshift type).
        assert table.schema.field("listen_time").type == pa.timestamp("us")
        day_rows = [
            {**row, "listen_time": row["listen_time"].replace(tzinfo=UTC)}
            for row in table.to_pylist()
        ]
        assert {row["kpi_date"] for row in day_rows} == {kpi_date}
        rows.extend(day_rows)
    return sorted(rows, key=lambda row: (row["listen_time"], row["user_id"], row["track_id"]))


def play(user_id: int, track_id: str, listen_time: datetime = TEN_UTC) -> dict[str, Any]:
    """A curated row as the Parquet file holds it: kpi_date is the UTC date."""
    return {
        "user_id": user_id,
        "track_id": track_id,
        "listen_time": listen_time,
        "kpi_date": listen_time.date(),
        "content_key": LINEAGE.content_key,
    }


def quarantined(result: AcceptedFile) -> list[dict[str, Any]]:
    """The quarantined rows of the file, in file order (malformed rows last)."""
    assert result.quarantine_path is not None
    return pq.read_table(result.quarantine_path).to_pylist()


def bad_row(
    reason: str, user_id: str | None, track_id: str | None, listen_time: str | None
) -> dict[str, Any]:
    """The quarantine columns of a row that has the header's field count."""
    return {
        "user_id": user_id,
        "track_id": track_id,
        "listen_time": listen_time,
        "raw_record": None,
        "reason": reason,
        "source_key": LINEAGE.source_key,
        "content_key": LINEAGE.content_key,
        "run_id": LINEAGE.run_id,
    }


def malformed_row(raw_record: str) -> dict[str, Any]:
    return {**bad_row("malformed_row", None, None, None), "raw_record": raw_record}


def without_record_number(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "record_number"} for row in rows]


# --- valid rows ---------------------------------------------------------------------


def test_valid_rows_are_written_to_curated_parquet_with_utc_time_date_and_content_key(
    tmp_path: Path,
) -> None:
    result = accepted(tmp_path, HEADER + "1,A,2024-06-25 10:00:00\n2,B,2024-06-25 10:05:00\n")

    assert result.plays_valid == 2
    assert result.duplicates == 0
    assert result.rows_quarantined == {}
    assert result.quarantine_path is None
    assert result.kpi_dates == [DAY]
    assert result.plays_by_date[DAY].name == "plays_2024-06-25.parquet"
    assert curated(result) == [
        play(1, "A"),
        play(2, "B", datetime(2024, 6, 25, 10, 5, tzinfo=UTC)),
    ]


# --- row reasons --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        pytest.param(("abc", "A", "2024-06-25 10:00:00"), "invalid_user_id", id="invalid_user"),
        pytest.param(("1", " \t ", "2024-06-25 10:00:00"), "missing_track_id", id="no_track"),
        pytest.param(("1", "A", "yesterday"), "invalid_listen_time", id="bad_time"),
        pytest.param(("99", "A", "2024-06-25 10:00:00"), "unknown_user_id", id="unknown_user"),
        pytest.param(("1", "ZZZ", "2024-06-25 10:00:00"), "unknown_track_id", id="unknown_track"),
    ],
)
def test_a_row_breaking_one_rule_is_quarantined_with_that_reason_and_its_raw_values(
    tmp_path: Path, row: tuple[str, str, str], reason: str
) -> None:
    # A valid row beside the bad one: only the bad one is quarantined.
    result = accepted(tmp_path, HEADER + ",".join(row) + "\n2,B,2024-06-25 10:00:00\n")

    assert result.rows_quarantined == {reason: 1}
    assert result.plays_valid == 1
    assert curated(result) == [play(2, "B")]
    assert without_record_number(quarantined(result)) == [bad_row(reason, *row)]
    assert result.quarantine_path == tmp_path / "out" / "quarantined_rows.parquet"


MALFORMED_LINES = ["1,A", "1,A,2024-06-25 10:00:00,extra", "just one field", "   ", ",,,"]


def test_a_row_with_another_field_count_than_the_header_is_malformed_and_kept_raw(
    tmp_path: Path,
) -> None:
    lines = [MALFORMED_LINES[0], "1,A,2024-06-25 10:00:00", *MALFORMED_LINES[1:]]
    result = accepted(tmp_path, HEADER + "\n".join(lines) + "\n")

    assert result.rows_quarantined == {"malformed_row": len(MALFORMED_LINES)}
    assert curated(result) == [play(1, "A")]
    rows = quarantined(result)
    assert [row["record_number"] for row in rows] == [None] * len(MALFORMED_LINES)
    assert without_record_number(rows) == [malformed_row(line) for line in MALFORMED_LINES]


def test_malformed_rows_go_to_disk_as_they_come_and_all_are_kept_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poison file (issue 17): malformed rows are spooled to a Parquet file a few at a time
    instead of piling up in memory; every one is kept, as read, in file order, beside rows
    quarantined for other reasons and valid plays. A row of 50,000 extra fields included."""
    monkeypatch.setattr(ingest, "_SPOOL_BYTES", 64)  # a flush every few rows
    wide = "1,A,2024-06-25 10:00:00" + ",x" * 50_000
    bad = [f"{n},A,2024-06-25 10:00:00,extra{n}" for n in range(300)] + [wide]
    lines = [*bad[:150], "1,A,2024-06-25 10:00:00", "abc,A,2024-06-25 10:00:00", *bad[150:]]
    result = accepted(tmp_path, HEADER + "\n".join(lines) + "\n")

    assert result.rows_quarantined == {"invalid_user_id": 1, "malformed_row": len(bad)}
    assert curated(result) == [play(1, "A")]
    rows = quarantined(result)
    assert without_record_number(rows) == [
        bad_row("invalid_user_id", "abc", "A", "2024-06-25 10:00:00"),
        *(malformed_row(line) for line in bad),
    ]
    spool = tmp_path / "out" / "malformed_rows.parquet"
    assert pq.ParquetFile(spool).metadata.num_row_groups > 100  # written as they came


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # Every rule broken, plus an extra field: the field count is checked first.
        pytest.param("x,,soon,more", "malformed_row", id="malformed_beats_all"),
        pytest.param("x,,soon", "invalid_user_id", id="user_id_beats_track_and_time"),
        pytest.param("99,,soon", "missing_track_id", id="track_beats_time_and_unknown"),
        pytest.param("99,ZZZ,soon", "invalid_listen_time", id="time_beats_unknown_ids"),
        pytest.param("99,ZZZ,2024-06-25 10:00:00", "unknown_user_id", id="user_beats_track"),
    ],
)
def test_the_first_failing_rule_wins_when_a_row_breaks_several(
    tmp_path: Path, line: str, reason: str
) -> None:
    result = accepted(tmp_path, HEADER + line + "\n")

    assert result.rows_quarantined == {reason: 1}
    assert result.plays_valid == 0
    assert result.plays_by_date == {}
    assert [row["reason"] for row in quarantined(result)] == [reason]


def test_each_bad_row_is_quarantined_even_when_repeated_and_counted_per_reason(
    tmp_path: Path,
) -> None:
    lines = [
        "abc,A,2024-06-25 10:00:00",
        "abc,A,2024-06-25 10:00:00",
        "99,A,2024-06-25 10:00:00",
        "1,A",
        "1,A,2024-06-25 10:00:00",
    ]
    result = accepted(tmp_path, HEADER + "\n".join(lines) + "\n")

    assert result.rows_quarantined == {
        "invalid_user_id": 2,
        "malformed_row": 1,
        "unknown_user_id": 1,
    }
    assert result.duplicates == 0  # only valid rows are de-duplicated
    assert without_record_number(quarantined(result)) == [
        bad_row("invalid_user_id", "abc", "A", "2024-06-25 10:00:00"),
        bad_row("invalid_user_id", "abc", "A", "2024-06-25 10:00:00"),
        bad_row("unknown_user_id", "99", "A", "2024-06-25 10:00:00"),
        malformed_row("1,A"),
    ]


# --- file reasons -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(
            (HEADER + "1,Café,2024-06-25 10:00:00\n").encode("latin-1"),
            FileReason.NOT_UTF8,
            id="latin1",
        ),
        pytest.param(
            (HEADER + "1,Caf").encode() + b"\xc3", FileReason.NOT_UTF8, id="cut_utf8_char"
        ),
        pytest.param(b"", FileReason.EMPTY_FILE, id="zero_bytes"),
        pytest.param(b" \r\n\t\n\x0b\x0c\n", FileReason.EMPTY_FILE, id="whitespace_only"),
        pytest.param(
            (HEADER + '1,"A,2024-06-25 10:00:00\n2,B,2024-06-25 10:00:00\n').encode(),
            FileReason.UNREADABLE_CSV,
            id="unbalanced_quote",
        ),
        pytest.param(b"user_id,track_id\n1,A\n", FileReason.MISSING_COLUMNS, id="no_listen_time"),
        pytest.param(
            b"user,track,time\n1,A,2024-06-25 10:00:00\n",
            FileReason.MISSING_COLUMNS,
            id="other_names",
        ),
        pytest.param(
            # The first record is the header: a line of spaces is not skipped.
            ("   \n" + HEADER + "1,A,2024-06-25 10:00:00\n").encode(),
            FileReason.MISSING_COLUMNS,
            id="spaces_line_before_header",
        ),
        pytest.param(
            b"user_id,track_id, User_ID ,listen_time\n1,A,1,2024-06-25 10:00:00\n",
            FileReason.AMBIGUOUS_COLUMNS,
            id="user_id_twice",
        ),
    ],
)
def test_a_bad_file_is_rejected_whole_and_writes_nothing(
    tmp_path: Path, content: bytes, reason: FileReason
) -> None:
    result = validate(tmp_path, content)

    assert isinstance(result, RejectedFile)
    assert result.reason == reason
    assert result.detail
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("block", [1, 2, 7, 64])
def test_utf8_is_checked_across_the_blocks_the_file_is_read_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """A character cut by a block boundary is whole across it; a lead byte followed by a
    block of plain ASCII is not (a block of ASCII alone needs no decoding)."""
    monkeypatch.setattr(ingest, "_BLOCK_SIZE", block)
    good = (HEADER + "1,A,2024-06-25 10:00:00\n2,Café,2024-06-25 10:00:00\n").encode()
    cut = good.index("é".encode()) + 1
    bad = good[:cut] + good[cut + 1 :]  # the lead byte of é, then ",2024-..." in ASCII

    assert isinstance(validate(tmp_path / "good", good), AcceptedFile)
    rejected = validate(tmp_path / "bad", bad)
    assert isinstance(rejected, RejectedFile)
    assert rejected.reason == FileReason.NOT_UTF8
    assert rejected.detail == f"invalid UTF-8 at byte {cut - 1}"


def test_a_utf8_byte_order_mark_is_dropped_and_the_file_accepted(tmp_path: Path) -> None:
    result = accepted(tmp_path, b"\xef\xbb\xbf" + (HEADER + "1,A,2024-06-25 10:00:00\n").encode())

    assert result.rows_quarantined == {}
    assert curated(result) == [play(1, "A")]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(HEADER, id="with_final_line_break"),
        pytest.param(HEADER.rstrip("\n"), id="without_final_line_break"),
        pytest.param("\r\n\r\n" + HEADER + "\n\n", id="among_blank_lines"),
    ],
)
def test_a_header_only_file_is_accepted_with_zero_plays(tmp_path: Path, content: str) -> None:
    result = accepted(tmp_path, content)

    assert result.plays_by_date == {}
    assert result.plays_valid == 0
    assert result.duplicates == 0
    assert result.rows_quarantined == {}
    assert result.quarantine_path is None


def test_header_names_are_trimmed_and_matched_case_insensitively(tmp_path: Path) -> None:
    result = accepted(tmp_path, ' User_ID ,"TRACK_ID",\tListen_Time\r\n1,A,2024-06-25 10:00:00\r\n')

    assert curated(result) == [play(1, "A")]


def test_extra_columns_are_ignored_and_columns_may_come_in_any_order(tmp_path: Path) -> None:
    content = (
        "country,listen_time,device,track_id,user_id\n"
        "FR,2024-06-25 10:00:00,phone,A,1\n"
        ",2024-06-25 10:00:00,,B,oops\n"
    )
    result = accepted(tmp_path, content)

    assert curated(result) == [play(1, "A")]
    assert without_record_number(quarantined(result)) == [
        bad_row("invalid_user_id", "oops", "B", "2024-06-25 10:00:00")
    ]


def test_last_row_without_a_line_break_is_read(tmp_path: Path) -> None:
    result = accepted(tmp_path, HEADER + "1,A,2024-06-25 10:00:00\n2,B,2024-06-25 10:00:00")

    assert curated(result) == [play(1, "A"), play(2, "B")]


def test_blank_lines_are_ignored_anywhere(tmp_path: Path) -> None:
    content = "\n\r\n" + HEADER + "\n1,A,2024-06-25 10:00:00\r\n\r\n\n2,B,2024-06-25 10:00:00\n\n"
    result = accepted(tmp_path, content)

    assert result.rows_quarantined == {}
    assert curated(result) == [play(1, "A"), play(2, "B")]


# --- listen_time --------------------------------------------------------------------


ACCEPTED_LISTEN_TIMES = {
    "2024-06-25 10:00:00": TEN_UTC,
    "2024-06-25T10:00:00": TEN_UTC,
    "2024-06-25t10:00:00": TEN_UTC,
    "2024-06-25 10:00:00Z": TEN_UTC,
    "2024-06-25T10:00:00z": TEN_UTC,
    "2024-06-25 12:00:00+02:00": TEN_UTC,
    "2024-06-25 12:00:00+0200": TEN_UTC,
    "2024-06-25 12:00:00+02": TEN_UTC,
    "2024-06-25 04:30:00-05:30": TEN_UTC,
    "2024-06-25 10:00:00-00:00": TEN_UTC,
    " \t2024-06-25 10:00:00\r\n ": TEN_UTC,
    "2024-06-25 10:00:00.5": TEN_UTC.replace(microsecond=500_000),
    "2024-06-25 10:00:00.000001": TEN_UTC.replace(microsecond=1),
    "2024-06-25T12:00:00.123456+02:00": TEN_UTC.replace(microsecond=123_456),
    "2024-02-29 23:59:59": datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
    "0001-01-01 00:00:00": datetime(1, 1, 1, tzinfo=UTC),
    "9999-12-31 23:59:59.999999": datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
}


def test_accepted_listen_time_spellings_give_the_utc_instant_and_date(tmp_path: Path) -> None:
    # One row per spelling, each on its own track so that none is a duplicate.
    spellings = list(ACCEPTED_LISTEN_TIMES)
    tracks = [f"T{number}" for number in range(len(spellings))]
    rows = [f'1,{track},"{text}"' for track, text in zip(tracks, spellings, strict=True)]
    result = accepted(tmp_path, HEADER + "\n".join(rows) + "\n", tracks=tracks)

    assert result.rows_quarantined == {}
    by_track = {row["track_id"]: row for row in curated(result)}
    assert {text: by_track.get(track) for track, text in zip(tracks, spellings, strict=True)} == {
        text: play(1, track, utc)
        for track, (text, utc) in zip(tracks, ACCEPTED_LISTEN_TIMES.items(), strict=True)
    }


REJECTED_LISTEN_TIMES = [
    "2024-06-25 10:00",
    "2024-06-25 24:00:00",
    "2024-06-25 10:60:00",
    "2024-06-25 10:00:60",
    "2024-02-30 10:00:00",
    "2023-02-29 10:00:00",
    "2024-13-01 10:00:00",
    "2024-06-25 10:00:00.1234567",
    "2024-06-25 10:00:00.",
    "2024-06-25 10:00:00+25:00",
    "2024-06-25 10:00:00+02:60",
    "2024-06-25 10:00:00 +02:00",
    "2024-06-25 10:00:00+2",
    "2024-06-25 10:00:00Zulu",
    "2024-06-25 10:00:00 UTC",
    "2024-06-25",
    "2024/06/25 10:00:00",
    "24-06-25 10:00:00",
    "1719309600",
    "0000-01-01 00:00:00",
    # Written in years 1-9999, but the offset takes the UTC instant outside them.
    "0001-01-01 00:30:00+01:00",
    "9999-12-31 23:30:00-01:00",
    "",
]


def test_rejected_listen_time_spellings_are_quarantined_as_invalid(tmp_path: Path) -> None:
    rows = [f'1,A,"{text}"' for text in REJECTED_LISTEN_TIMES]
    result = accepted(tmp_path, HEADER + "\n".join(rows) + "\n")

    assert result.plays_valid == 0
    assert result.rows_quarantined == {"invalid_listen_time": len(REJECTED_LISTEN_TIMES)}
    assert without_record_number(quarantined(result)) == [
        bad_row("invalid_listen_time", "1", "A", text) for text in REJECTED_LISTEN_TIMES
    ]


def test_offsets_move_plays_across_midnight_into_one_parquet_per_utc_date(
    tmp_path: Path,
) -> None:
    content = HEADER + (
        "1,A,2024-06-25 00:30:00+02:00\n"  # 2024-06-24 22:30 UTC
        "1,A,2024-06-25 12:00:00\n"
        "2,B,2024-06-25 23:30:00-02:00\n"  # 2024-06-26 01:30 UTC
        "2,A,2024-06-26 00:00:00Z\n"
    )
    result = accepted(tmp_path, content)

    assert result.kpi_dates == [date(2024, 6, 24), DAY, date(2024, 6, 26)]
    assert {d: p.name for d, p in result.plays_by_date.items()} == {
        date(2024, 6, 24): "plays_2024-06-24.parquet",
        DAY: "plays_2024-06-25.parquet",
        date(2024, 6, 26): "plays_2024-06-26.parquet",
    }
    # curated() also checks that each file holds only its own date.
    assert curated(result) == [
        play(1, "A", datetime(2024, 6, 24, 22, 30, tzinfo=UTC)),
        play(1, "A", datetime(2024, 6, 25, 12, 0, tzinfo=UTC)),
        play(2, "A", datetime(2024, 6, 26, 0, 0, tzinfo=UTC)),
        play(2, "B", datetime(2024, 6, 26, 1, 30, tzinfo=UTC)),
    ]


# --- user_id ------------------------------------------------------------------------


SEVEN_SPELLINGS = ["7", " 7 ", "\t7\t", "\x0b7\x0c", "\r\n7", "+7", "007", " +007 "]
NOT_INTEGERS = ["1.5", "7.0", "abc", "", "   ", "7a", "1e3", "--7", "+", "7 7", "\u0667", "\u00a07"]
UNKNOWN_INTEGERS = ["1" * 30, "9" * 45, "-7", "0"]


def test_user_id_spellings_of_seven_are_user_seven(tmp_path: Path) -> None:
    # Each spelling on its own track, so that none is a duplicate of another.
    tracks = [f"T{number}" for number in range(len(SEVEN_SPELLINGS))]
    rows = [
        f'"{user_id}",{track},2024-06-25 10:00:00'
        for user_id, track in zip(SEVEN_SPELLINGS, tracks, strict=True)
    ]
    result = accepted(tmp_path, HEADER + "\n".join(rows) + "\n", tracks=tracks)

    assert result.rows_quarantined == {}
    assert curated(result) == [play(7, track) for track in sorted(tracks)]


def test_a_user_id_that_is_not_an_integer_is_invalid(tmp_path: Path) -> None:
    rows = [f'"{user_id}",A,2024-06-25 10:00:00' for user_id in NOT_INTEGERS]
    result = accepted(tmp_path, HEADER + "\n".join(rows) + "\n")

    assert result.rows_quarantined == {"invalid_user_id": len(NOT_INTEGERS)}
    assert without_record_number(quarantined(result)) == [
        bad_row("invalid_user_id", user_id, "A", "2024-06-25 10:00:00") for user_id in NOT_INTEGERS
    ]


def test_an_integer_user_id_no_user_has_is_unknown_even_beyond_bigint(tmp_path: Path) -> None:
    rows = [f"{user_id},A,2024-06-25 10:00:00" for user_id in UNKNOWN_INTEGERS]
    result = accepted(tmp_path, HEADER + "\n".join(rows) + "\n")

    assert result.rows_quarantined == {"unknown_user_id": len(UNKNOWN_INTEGERS)}
    assert without_record_number(quarantined(result)) == [
        bad_row("unknown_user_id", user_id, "A", "2024-06-25 10:00:00")
        for user_id in UNKNOWN_INTEGERS
    ]


# --- track_id -----------------------------------------------------------------------


def test_track_id_is_trimmed_of_ascii_whitespace_but_otherwise_exact(tmp_path: Path) -> None:
    content = HEADER + (
        '1," \tA\r\n",2024-06-25 10:00:00\n'
        "2,a,2024-06-25 10:00:00\n"  # track ids are case-sensitive
        "2,\u00a0B,2024-06-25 10:00:00\n"  # a no-break space is not trimmed
    )
    result = accepted(tmp_path, content)

    assert curated(result) == [play(1, "A")]
    assert without_record_number(quarantined(result)) == [
        bad_row("unknown_track_id", "2", "a", "2024-06-25 10:00:00"),
        bad_row("unknown_track_id", "2", "\u00a0B", "2024-06-25 10:00:00"),
    ]


# --- duplicates ---------------------------------------------------------------------


def test_rows_repeating_user_track_and_instant_are_one_play(tmp_path: Path) -> None:
    content = HEADER + (
        "1,A,2024-06-25 10:00:00\n"
        "1,A,2024-06-25 10:00:00\n"
        " 001 , A ,2024-06-25T10:00:00.000000\n"  # same play, spelled differently
        "1,A,2024-06-25 10:00:01\n"  # another second: another play
        "1,A,2024-06-25 10:00:00.000001\n"  # another microsecond: another play
        "1,B,2024-06-25 10:00:00\n"  # another track
        "2,A,2024-06-25 10:00:00\n"  # another user
    )
    result = accepted(tmp_path, content)

    assert result.plays_valid == 5
    assert result.duplicates == 2
    assert result.rows_quarantined == {}
    assert curated(result) == [
        play(1, "A"),
        play(1, "B"),
        play(2, "A"),
        play(1, "A", TEN_UTC.replace(microsecond=1)),
        play(1, "A", TEN_UTC.replace(second=1)),
    ]


def test_the_same_instant_with_different_offsets_is_a_duplicate(tmp_path: Path) -> None:
    content = HEADER + (
        "1,A,2024-06-25 10:00:00Z\n"
        "1,A,2024-06-25 12:00:00+02:00\n"
        "1,A,2024-06-25 05:00:00-0500\n"
        "1,A,2024-06-25 10:00:00\n"
    )
    result = accepted(tmp_path, content)

    assert result.plays_valid == 1
    assert result.duplicates == 3
    assert curated(result) == [play(1, "A")]


# --- CSV quoting --------------------------------------------------------------------


def test_quoted_comma_and_escaped_quote_pair_stay_in_the_track_id(tmp_path: Path) -> None:
    track = 'Live, at "Wembley"'
    content = HEADER + '1,"Live, at ""Wembley""",2024-06-25 10:00:00\n'
    content += '2,"Live, at ""Wembley"" ",2024-06-25 10:00:00\n'  # trimmed: the same track
    content += '1,"Live, at ""Paris""",2024-06-25 10:00:00\n'
    result = accepted(tmp_path, content, tracks=(track, "A"))

    assert curated(result) == [play(1, track), play(2, track)]
    assert without_record_number(quarantined(result)) == [
        bad_row("unknown_track_id", "1", 'Live, at "Paris"', "2024-06-25 10:00:00")
    ]


def test_a_quoted_line_break_is_part_of_the_value_not_a_new_row(tmp_path: Path) -> None:
    track = "first line\nsecond line"
    content = HEADER + (
        '1,"first line\nsecond line",2024-06-25 10:00:00\n'
        '2,A,"2024-06-25 10:00:00\r\n"\n'  # trailing line break trimmed from the time
        '2,"A\nB",2024-06-25 10:00:00\n'
    )
    result = accepted(tmp_path, content, tracks=(track, "A"))

    assert result.rows_quarantined == {"unknown_track_id": 1}
    assert curated(result) == [play(1, track), play(2, "A")]
    assert without_record_number(quarantined(result)) == [
        bad_row("unknown_track_id", "2", "A\nB", "2024-06-25 10:00:00")
    ]


# --- agreement with the reference ---------------------------------------------------

# Known ids (some spelled unusually) are drawn half of the time, so that plays and
# duplicates are common; the rest mixes every kind of bad value.
KNOWN_USER_CELLS = ["1", "2", "7", " 7 ", "\t+2", "007"]
OTHER_USER_CELLS = ["99", "1" * 30, "1.5", "abc", "", "-1", "\u00a07"]
# Spellings a cast would read as a number although rule 1 does not (the fast path must not).
CAST_ONLY_USER_CELLS = ["1e0", "1_0", "0x1", "7.0", "0", "00", "+7 ", "9" * 19]
KNOWN_TRACK_CELLS = ["A", "B", " A ", 'A,"B"']
OTHER_TRACK_CELLS = ["A\tB", "a", "Z", "", "  ", "A\nB", "\u00a0A"]
BAD_TIMES = [
    "",
    "2024-06-25 10:00",
    "2024-06-25 24:00:00",
    "2024-02-30 10:00:00",
    "2024-06-25 10:00:00.1234567",
    "2024-06-25 10:00:00+25:00",
    "2024-06-25 10:00:00 garbage",
    "0000-01-01 00:00:00",
    "0001-01-01 00:30:00+01:00",
    "9999-12-31 23:30:00-01:00",
    "2024-6-25 10:00:00",
    "2024-06-25 10:00:00.Z",
    "2024-06-25T10:00:00ZZ",
]
# Hours and offsets chosen so that different spellings often name the same instant.
OFFSETS = ["", "Z", "z", "+00:00", "+02:00", "+0200", "-02", "-23:59"]


@st.composite
def listen_times(draw: st.DrawFn) -> str:
    """A listen_time cell: mostly valid spellings near midnight, sometimes a bad one."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(BAD_TIMES))
    day = draw(st.sampled_from(["2024-06-24", "2024-06-25", "2024-02-29"]))
    hour = draw(st.sampled_from(["00", "02", "22"]))
    minute = draw(st.sampled_from(["00", "30"]))
    fraction = draw(st.sampled_from(["", "", ".5", ".500000", ".000001"]))
    separator = draw(st.sampled_from([" ", "T", "t"]))
    padding = draw(st.sampled_from(["", " ", "\t"]))
    offset = draw(st.sampled_from(OFFSETS))
    return f"{padding}{day}{separator}{hour}:{minute}:00{fraction}{offset}{padding}"


@st.composite
def stream_files(draw: st.DrawFn) -> bytes:
    """A small stream file: shuffled header with an extra column, mixed rows, blank lines."""
    columns = draw(st.permutations(["user_id", "track_id", "listen_time", "device"]))
    header = [draw(st.sampled_from([c, c.upper(), f" {c} "])) for c in columns]
    records: list[list[str]] = [header]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 7))
        if kind == 0:  # a row with another field count than the header
            records.append(["1", "A", "2024-06-25 10:00:00", "x", "y"][: draw(st.integers(1, 5))])
            if len(records[-1]) == len(header):
                records[-1].append("z")
        elif kind in (1, 2) and len(records) > 1:  # a repeat of an earlier row
            records.append(list(draw(st.sampled_from(records[1:]))))
        else:
            cells = {
                "user_id": draw(
                    st.one_of(
                        st.sampled_from(KNOWN_USER_CELLS),
                        st.sampled_from(OTHER_USER_CELLS),
                        st.sampled_from(CAST_ONLY_USER_CELLS),
                    )
                ),
                "track_id": draw(
                    st.one_of(
                        st.sampled_from(KNOWN_TRACK_CELLS), st.sampled_from(OTHER_TRACK_CELLS)
                    )
                ),
                "listen_time": draw(listen_times()),
                "device": draw(st.sampled_from(["phone", "", "a,b"])),
            }
            records.append([cells[c] for c in columns])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    for record in records:
        writer.writerow(record)
        if draw(st.integers(0, 7)) == 0:
            buffer.write("\n")  # a blank line
    text = buffer.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no line break after the last record
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + text.encode()


RANDOM_FILE_TRACKS = ("A", "B", 'A,"B"')


@pytest.fixture(scope="module")
def random_file_snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_snapshots(tmp_path_factory.mktemp("snapshots"), USERS, RANDOM_FILE_TRACKS)


@settings(max_examples=60, deadline=None)
@given(content=stream_files())
def test_validation_agrees_with_the_reference_on_random_files(
    tmp_path_factory: pytest.TempPathFactory,
    random_file_snapshots: tuple[Path, Path],
    content: bytes,
) -> None:
    expected = read_stream_file(content, set(USERS), set(RANDOM_FILE_TRACKS))
    result = validate(tmp_path_factory.mktemp("example"), content, snapshots=random_file_snapshots)

    assert expected.reason is None, expected.reason  # the generator only writes good files
    assert isinstance(result, AcceptedFile), result
    assert result.plays_valid == len(expected.plays)
    assert result.duplicates == expected.duplicates
    assert result.rows_quarantined == dict(expected.rows_quarantined)
    assert {(r["user_id"], r["track_id"], r["listen_time"]) for r in curated(result)} == set(
        expected.plays
    )
    assert all(row["kpi_date"] == row["listen_time"].date() for row in curated(result))
    if expected.rows_quarantined:
        assert Counter(row["reason"] for row in quarantined(result)) == expected.rows_quarantined
    else:
        assert result.quarantine_path is None


def quarantined_as_written(
    content: bytes, users: set[int], tracks: set[str]
) -> list[tuple[int, str, str, str, str]]:
    """(record number, reason, user_id, track_id, listen_time as written) of each row the
    reference quarantines, rows with another field count than the header's aside."""
    records = [r for r in csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")) if r]
    header = [strip(name).lower() for name in records[0]]
    columns = [header.index(name) for name in ("user_id", "track_id", "listen_time")]
    rows = []
    number = 0
    for record in records[1:]:
        if len(record) != len(header):
            continue  # malformed: kept whole, without a record number
        number += 1
        outcome = classify_row(record, header, users, tracks)
        if isinstance(outcome, str):
            rows.append((number, outcome, *(record[i] for i in columns)))
    return rows


@settings(max_examples=60, deadline=None)
@given(content=stream_files())
def test_quarantined_rows_keep_their_values_as_written_and_their_record_number(
    tmp_path_factory: pytest.TempPathFactory,
    random_file_snapshots: tuple[Path, Path],
    content: bytes,
) -> None:
    """Valid values are not stored as text (the typed value spells them); a quarantined row
    must still show exactly what the file holds, whichever way each value was read."""
    expected = quarantined_as_written(content, set(USERS), set(RANDOM_FILE_TRACKS))
    result = validate(tmp_path_factory.mktemp("example"), content, snapshots=random_file_snapshots)

    assert isinstance(result, AcceptedFile), result
    rows = quarantined(result) if result.quarantine_path else []
    assert [
        (r["record_number"], r["reason"], r["user_id"], r["track_id"], r["listen_time"])
        for r in rows
        if r["reason"] != "malformed_row"
    ] == expected


def test_a_quote_inside_an_unquoted_field_is_plain_text(tmp_path: Path) -> None:
    # e.g. a device column: 12" speaker. Only a quote that opens a field starts quoting.
    content = "user_id,track_id,listen_time,device\n"
    content += '1,A,2024-06-25 10:00:00,12" speaker\n2,A,2024-06-25 10:00:00,phone\n'

    result = accepted(tmp_path, content)

    assert curated(result) == [play(1, "A"), play(2, "A")]


def test_text_after_a_closing_quote_makes_the_file_unreadable(tmp_path: Path) -> None:
    result = validate(tmp_path, HEADER + '1,"A"x,2024-06-25 10:00:00\n')

    assert isinstance(result, RejectedFile)
    assert result.reason == FileReason.UNREADABLE_CSV
    assert "quoting" in result.detail


def test_a_file_holding_only_a_byte_order_mark_is_empty(tmp_path: Path) -> None:
    result = validate(tmp_path, b"\xef\xbb\xbf\r\n")

    assert isinstance(result, RejectedFile)
    assert result.reason == FileReason.EMPTY_FILE


def test_each_row_is_checked_against_the_snapshot_of_its_own_date(tmp_path):
    """A late file spans a pinned date (users 1, 2 and tracks A, B then) and a new one
    (today: user 2 gone, track C added): each row is judged by its own date's snapshot."""
    then = Snapshot(*write_snapshots(tmp_path / "then", users=(1, 2), tracks=("A", "B")))
    today = Snapshot(*write_snapshots(tmp_path / "today", users=(1,), tracks=("A", "C")))
    next_day = date(2024, 6, 26)
    asked: list[list[date]] = []

    def snapshots_of(dates: list[date]) -> dict[date, Snapshot]:
        asked.append(dates)
        return {d: then if d == DAY else today for d in dates}

    content = (
        HEADER
        + "2,B,2024-06-25 10:00:00\n"  # valid then
        + "1,C,2024-06-25 11:00:00\n"  # C did not exist then
        + "2,A,2024-06-26 10:00:00\n"  # user 2 is gone today
        + "1,C,2024-06-26 11:00:00\n"  # valid today
        + "1,A,not a time\n"  # no date: never asks for one
    )
    csv_path = tmp_path / "streams.csv"
    csv_path.write_text(content)
    con = connect(EngineSettings(), tmp_path)
    try:
        result = validate_stream_file(
            csv_path, snapshots=snapshots_of, lineage=LINEAGE, out_dir=tmp_path / "out", con=con
        )
    finally:
        con.close()

    assert isinstance(result, AcceptedFile)
    assert asked == [[DAY, next_day]]
    assert result.rows_quarantined == {
        "invalid_listen_time": 1,
        "unknown_track_id": 1,
        "unknown_user_id": 1,
    }
    assert sorted((r["user_id"], r["track_id"]) for r in curated(result)) == [(1, "C"), (2, "B")]
