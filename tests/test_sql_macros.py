"""The fast macros of ``sql/macros.sql`` give exactly what the slow, obvious SQL gives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kpi_pipeline import engine
from kpi_pipeline.settings import EngineSettings
from kpi_pipeline.warehouse.schema import truncate_utf8

# Valid plays are dated in years 1-9999 (docs/kpis.md rule 3), microseconds included.
INSTANTS = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
)


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = engine.connect(EngineSettings(), Path(tmp_path_factory.mktemp("macros")))
    yield connection
    connection.close()


@settings(max_examples=300, deadline=None)
@given(moment=INSTANTS)
@example(moment=dt.datetime(1, 1, 1))
@example(moment=dt.datetime(9999, 12, 31, 23, 59, 59, 999999))
@example(moment=dt.datetime(1969, 12, 31, 23, 59, 59, 999999))
@example(moment=dt.datetime(1970, 1, 1))
@example(moment=dt.datetime(2024, 2, 29, 23, 0))
@example(moment=dt.datetime(1600, 2, 29, 0, 59, 59, 999999))
def test_the_hour_number_gives_the_utc_date_and_hour_of_any_valid_instant(
    con: duckdb.DuckDBPyConnection, moment: dt.datetime
) -> None:
    instant = moment.replace(tzinfo=dt.UTC)
    row = con.execute(
        "SELECT date_of_hour_number(utc_hour_number(?::TIMESTAMPTZ)), "
        "hour_of_hour_number(utc_hour_number(?::TIMESTAMPTZ))",
        [instant, instant],
    ).fetchone()
    assert row == (moment.date(), moment.hour)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), limit=st.integers(min_value=0, max_value=300))
@example(text="ab€cd", limit=4)
@example(text="🎵" * 100, limit=255)
def test_fit_bytes_is_the_longest_prefix_that_fits_as_python_cuts_it(
    con: duckdb.DuckDBPyConnection, text: str, limit: int
) -> None:
    """What song_tracks and song_artists hold (a Redshift VARCHAR's width is in bytes), cut
    as the Lambda engine cuts the KPI columns (kpi_pipeline.warehouse.schema.truncate_utf8)."""
    (fitted,) = con.execute("SELECT fit_bytes(?, ?)", [text, limit]).fetchone() or (None,)
    assert fitted == truncate_utf8(text, limit)


USER_ID_TEXT = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.from_regex(r"\A[ +\-0]{0,2}[0-9]{1,20}[ ]?\Z"),
    st.text(alphabet="0123456789 +-.e\t", max_size=22),
)


@settings(max_examples=400, deadline=None)
@given(text=USER_ID_TEXT)
@example(text="0")
@example(text="00")
@example(text="999999999999999999")
@example(text="9223372036854775807")
def test_a_plain_user_id_is_an_integer_text_whose_bigint_prints_as_written(
    con: duckdb.DuckDBPyConnection, text: str
) -> None:
    plain, integer, value = con.execute(
        "SELECT is_plain_user_id(?), is_integer_text(?), TRY_CAST(? AS BIGINT)", [text, text, text]
    ).fetchone() or (None, None, None)
    if plain:
        assert integer
        assert str(value) == text


TRACK_ID_TEXT = st.text(
    alphabet=st.sampled_from(
        [*'aZ09_-;"é', " ", "\t", "\r", "\n", "\x0c", "\x0b", "\x01", "\u0301", "🎵"]
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(text=TRACK_ID_TEXT)
@example(text="")
@example(text=" a")
@example(text="a\t")
@example(text="a \u0301")  # a combining mark on a space: one character of two code points
@example(text="a\r\n")
@example(text="\u0301a")
def test_a_plain_track_id_has_nothing_to_strip(con: duckdb.DuckDBPyConnection, text: str) -> None:
    plain, stripped = con.execute(
        "SELECT is_plain_track_id(?), strip_ws(?)", [text, text]
    ).fetchone() or (
        None,
        None,
    )
    if plain:
        assert stripped == text != ""


@settings(max_examples=400, deadline=None)
@given(text=USER_ID_TEXT)
@example(text="-5")
@example(text="-0")
@example(text="+5")
@example(text="1.5")
@example(text="1e3")
@example(text="0x10")
@example(text="1_000")
@example(text=" 5")
@example(text="9223372036854775807")
@example(text="-9223372036854775808")
def test_a_user_id_that_prints_as_written_reads_as_the_full_rule_reads_it(
    con: duckdb.DuckDBPyConnection, text: str
) -> None:
    """parse_stream_rows.sql's fast path for rule 1: a cast, and the text as its value
    prints (DuckDB's cast takes more than rule 1 does: '1.5' reads as 2, '0x10' as 16)."""
    plain, integer, same = con.execute(
        "SELECT prints_as_written(TRY_CAST(? AS BIGINT), ?), is_integer_text(strip_ws(?)), "
        "TRY_CAST(strip_ws(?) AS BIGINT) = TRY_CAST(? AS BIGINT)",
        [text] * 5,
    ).fetchone() or (None, None, None)
    if plain:
        assert integer
        assert same


TIMESTAMP_TEXT = st.one_of(
    INSTANTS.map(lambda m: m.isoformat(sep="T")),
    INSTANTS.map(lambda m: m.isoformat(sep=" ")),
    INSTANTS.map(lambda m: m.isoformat(sep=" ") + "Z"),
    st.from_regex(
        r"\A[0-9]{4,5}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?"
        r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?| \(BC\))?\Z"
    ),
)


@settings(max_examples=400, deadline=None)
@given(text=TIMESTAMP_TEXT)
@example(text="2024-06-25 23:59:59.999999")
@example(text="2024-06-25 10:00:00.5")
@example(text="2024-06-25 10:00:00.120000")
@example(text="2024-06-25 24:00:00")
@example(text="2024-02-30 00:00:00")
@example(text="0000-01-01 00:00:00")
@example(text="0001-01-01 00:00:00")
@example(text="9999-12-31 23:59:59.999999")
@example(text="10000-01-01 00:00:00")
@example(text="infinity")
@example(text="-infinity")
@example(text="2024-06-25 00:00:00+01:00")
def test_a_timestamp_that_prints_as_written_reads_as_the_full_rule_reads_it(
    con: duckdb.DuckDBPyConnection, text: str
) -> None:
    """parse_stream_rows.sql's fast path for rule 3: a TIMESTAMP cast, and the text as the
    value prints (so no offset, which the cast would drop). The cast takes values rule 3
    does not ('infinity', year 10000): none is in years 1-9999, where a valid play is."""
    plain, in_years, full, same = con.execute(
        """
        WITH t AS (SELECT ? AS text, TRY_CAST(? AS TIMESTAMP) AS value)
        SELECT
            prints_as_written(value, text),
            value >= TIMESTAMP '0001-01-01' AND value < TIMESTAMP '10000-01-01',
            is_iso_timestamp_text(upper(strip_ws(text))),
            CAST(TRY_CAST(upper(strip_ws(text)) AS TIMESTAMPTZ) AS TIMESTAMP) = value
        FROM t
        """,
        [text, text],
    ).fetchone() or (None, None, None, None)
    if plain and in_years:
        assert full
        assert same
