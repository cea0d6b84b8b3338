"""The ``music_kpi_metrics`` definition (docs/kpis.md, "Warehouse table") and its SQL builders."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from kpi_pipeline.warehouse.arrow import KPI_SCHEMA, fit_to_schema
from kpi_pipeline.warehouse.schema import (
    KPI_COLUMNS,
    STAGE_COLUMNS,
    TABLE_COLUMNS,
    StageBatch,
    clear_stage_sql,
    create_parts_sql,
    create_stage_table_sql,
    create_table_sql,
    delete_dates_sql,
    insert_from_sql,
    insert_from_stage_sql,
    insert_into_stage_sql,
    truncate_utf8,
)

# The spec's table, written out again by hand: the schema module must agree with it.
SPEC_COLUMNS = [
    ("kpi_type", "VARCHAR(50)"),
    ("kpi_date", "DATE"),
    ("track_genre", "VARCHAR(255)"),
    ("listen_count", "BIGINT"),
    ("avg_track_duration_sec", "FLOAT"),
    ("popularity_index", "FLOAT"),
    ("most_popular_track", "VARCHAR(255)"),
    ("most_popular_track_id", "VARCHAR(64)"),
    ("stream_hour", "INT"),
    ("unique_listeners", "INT"),
    ("top_artists", "VARCHAR(255)"),
    ("track_diversity_index", "FLOAT"),
    ("run_id", "VARCHAR(128)"),
    ("loaded_at", "TIMESTAMP"),
]
VARCHAR_WIDTHS = {
    "kpi_type": 50,
    "track_genre": 255,
    "most_popular_track": 255,
    "most_popular_track_id": 64,
    "top_artists": 255,
    "run_id": 128,
}


def kpi_table(**overrides: list[object]) -> pa.Table:
    """A one-row KPI table (a genre row), with some columns replaced."""
    row: dict[str, list[object]] = {
        "kpi_type": ["genre"],
        "kpi_date": [dt.date(2024, 6, 25)],
        "track_genre": ["pop"],
        "listen_count": [3],
        "avg_track_duration_sec": [210.0],
        "popularity_index": [83.33],
        "most_popular_track": ["A"],
        "most_popular_track_id": ["A"],
        "stream_hour": [None],
        "unique_listeners": [None],
        "top_artists": [None],
        "track_diversity_index": [None],
        "run_id": ["run-1"],
    }
    row.update(overrides)
    return pa.table(row, schema=KPI_SCHEMA)


# --- the column list ------------------------------------------------------------------------


def test_table_columns_are_the_spec_columns_with_their_types_in_order() -> None:
    assert [(c.name, c.sql_type) for c in TABLE_COLUMNS] == SPEC_COLUMNS


def test_only_kpi_date_is_not_null() -> None:
    assert [c.name for c in TABLE_COLUMNS if c.not_null] == ["kpi_date"]


def test_varchar_byte_widths_match_the_declared_sql_widths() -> None:
    assert {c.name: c.max_bytes for c in TABLE_COLUMNS if c.max_bytes} == VARCHAR_WIDTHS


def test_parquet_schema_has_the_kpi_columns_without_loaded_at() -> None:
    assert KPI_SCHEMA.names == [name for name, _ in SPEC_COLUMNS[:-1]]
    assert KPI_SCHEMA.field("kpi_date").type == pa.date32()
    assert KPI_SCHEMA.field("listen_count").type == pa.int64()
    assert KPI_SCHEMA.field("stream_hour").type == pa.int32()
    assert KPI_SCHEMA.field("unique_listeners").type == pa.int32()
    assert KPI_SCHEMA.field("popularity_index").type == pa.float64()
    assert KPI_SCHEMA.field("run_id").type == pa.string()
    assert [c.name for c in KPI_COLUMNS] == KPI_SCHEMA.names


# --- truncate_utf8 ----------------------------------------------------------------------------


def test_truncate_utf8_never_splits_a_two_byte_character() -> None:
    # 300 x 'é' is 600 bytes; 255 bytes hold 127 of them (254 bytes), not half of the 128th.
    assert truncate_utf8("é" * 300, 255) == "é" * 127


@pytest.mark.parametrize(
    ("text", "max_bytes", "expected"),
    [
        ("abc€", 5, "abc"),  # '€' is 3 bytes: 'abc' + 2 bytes of it would not be valid UTF-8
        ("abc€", 6, "abc€"),  # exact fit is kept whole
        ("🎵🎵", 7, "🎵"),  # 4-byte characters
        ("abcdef", 3, "abc"),
    ],
)
def test_truncate_utf8_keeps_the_longest_prefix_that_fits(
    text: str, max_bytes: int, expected: str
) -> None:
    result = truncate_utf8(text, max_bytes)
    assert result == expected
    assert len(result.encode("utf-8")) <= max_bytes


def test_truncate_utf8_leaves_short_and_empty_text_unchanged() -> None:
    assert truncate_utf8("Beyoncé", 255) == "Beyoncé"
    assert truncate_utf8("", 10) == ""


# --- fit_to_schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "width"), sorted(VARCHAR_WIDTHS.items()))
def test_fit_to_schema_cuts_each_varchar_column_to_its_byte_width(column: str, width: int) -> None:
    fitted = fit_to_schema(kpi_table(**{column: ["é" * 300]}))

    value = fitted.column(column)[0].as_py()
    assert value == "é" * (width // 2)
    assert len(value.encode("utf-8")) <= width


def test_fit_to_schema_leaves_other_rows_and_columns_alone() -> None:
    table = pa.concat_tables(
        [kpi_table(track_genre=["x" * 300]), kpi_table(track_genre=["rock"], run_id=["run-2"])]
    )

    fitted = fit_to_schema(table)

    assert fitted.column("track_genre").to_pylist() == ["x" * 255, "rock"]
    assert fitted.column("run_id").to_pylist() == ["run-1", "run-2"]
    assert fitted.column("listen_count").to_pylist() == [3, 3]


def test_fit_to_schema_keeps_empty_strings_and_nulls_apart() -> None:
    table = pa.concat_tables(
        [
            kpi_table(track_genre=[""], top_artists=[None], most_popular_track=["y" * 400]),
            kpi_table(track_genre=[None], top_artists=[""], most_popular_track=[None]),
        ]
    )

    fitted = fit_to_schema(table)

    assert fitted.column("track_genre").to_pylist() == ["", None]
    assert fitted.column("top_artists").to_pylist() == [None, ""]
    # The column that needed cutting keeps its NULL too.
    assert fitted.column("most_popular_track").to_pylist() == ["y" * 255, None]


def test_fit_to_schema_selects_orders_and_casts_to_the_kpi_schema() -> None:
    source = kpi_table().to_pydict()
    # Columns shuffled, an extra column, and wider integer types than the schema's.
    shuffled = {name: source[name] for name in reversed(list(source))}
    shuffled["extra"] = ["ignored"]
    table = pa.table(shuffled).set_column(
        list(shuffled).index("stream_hour"), "stream_hour", pa.array([7], type=pa.int64())
    )

    fitted = fit_to_schema(table)

    assert fitted.schema == KPI_SCHEMA
    assert fitted.column("stream_hour").to_pylist() == [7]


# --- SQL builders -----------------------------------------------------------------------------


def test_create_table_sql_for_postgres_lists_every_column_and_no_redshift_clause() -> None:
    sql = create_table_sql("music_kpi_metrics", redshift=False)

    assert sql.startswith("CREATE TABLE IF NOT EXISTS music_kpi_metrics (")
    assert "kpi_date DATE NOT NULL" in sql
    positions = [sql.index(f"{name} {sql_type}") for name, sql_type in SPEC_COLUMNS]
    assert positions == sorted(positions)
    assert "SORTKEY" not in sql
    assert "DISTSTYLE" not in sql


def test_create_table_sql_for_redshift_sorts_by_date_then_type() -> None:
    sql = create_table_sql("analytics.kpis", redshift=True)

    assert sql.startswith("CREATE TABLE IF NOT EXISTS analytics.kpis (")
    assert sql.endswith(")\nDISTSTYLE AUTO\nSORTKEY (kpi_date, kpi_type)")


def test_create_parts_sql_is_a_temp_table_of_the_kpi_columns_only() -> None:
    sql = create_parts_sql()

    assert sql == (
        "CREATE TEMP TABLE kpi_parts (kpi_type VARCHAR(50), kpi_date DATE, "
        "track_genre VARCHAR(255), listen_count BIGINT, avg_track_duration_sec FLOAT, "
        "popularity_index FLOAT, most_popular_track VARCHAR(255), "
        "most_popular_track_id VARCHAR(64), stream_hour INT, unique_listeners INT, "
        "top_artists VARCHAR(255), track_diversity_index FLOAT, run_id VARCHAR(128))"
    )


def test_delete_dates_sql_deduplicates_and_sorts_the_dates() -> None:
    dates = [dt.date(2024, 6, 25), dt.date(2024, 6, 3), dt.date(2024, 6, 25), dt.date(2023, 12, 31)]

    assert delete_dates_sql("music_kpi_metrics", dates) == [
        "DELETE FROM music_kpi_metrics WHERE kpi_date IN ('2023-12-31', '2024-06-03', '2024-06-25')"
    ]


def test_any_number_of_dates_is_deleted_in_statements_the_data_api_takes() -> None:
    """Issue 17, item 5: 7,200 dates in one DELETE were over the Data API's 100,000
    characters, and every later load failed on it."""
    first = dt.date(1, 1, 1)
    dates = [first + dt.timedelta(days=n) for n in range(10_000)]

    statements = delete_dates_sql("music_kpi_metrics", dates)

    assert len(statements) == 7
    assert max(len(s) for s in statements) < 100_000
    listed = [d for s in statements for d in s.split("IN (")[1].rstrip(")").split(", ")]
    assert listed == [f"'{d.isoformat()}'" for d in dates]


def test_insert_from_sql_stamps_loaded_at_as_utc_wall_clock() -> None:
    paris_summer = dt.timezone(dt.timedelta(hours=2))
    loaded_at = dt.datetime(2024, 6, 26, 1, 30, 5, tzinfo=paris_summer)

    sql = insert_from_sql("music_kpi_metrics", "stage", loaded_at)

    names = ", ".join(name for name, _ in SPEC_COLUMNS[:-1])
    assert sql == (
        f"INSERT INTO music_kpi_metrics ({names}, loaded_at) "
        f"SELECT {names}, TIMESTAMP '2024-06-25 23:30:05' FROM stage"
    )


BATCH_A, BATCH_B = "a" * 32, "b" * 32


def test_the_stage_table_has_the_kpi_columns_then_attempt_batch_and_time() -> None:
    assert [c.name for c in STAGE_COLUMNS] == [
        *(c.name for c in KPI_COLUMNS),
        "attempt",
        "batch_id",
        "computed_at",
    ]
    sql = create_stage_table_sql("music_kpi_metrics_stage")
    # The warehouse's clock: a batch's statement is the same text however often it is sent.
    assert sql.endswith(
        "computed_at TIMESTAMP NOT NULL DEFAULT GETDATE()\n)\nDISTSTYLE AUTO\nSORTKEY (kpi_date)"
    )
    assert "DEFAULT LOCALTIMESTAMP" in create_stage_table_sql("s", redshift=False)


def test_a_date_computed_in_the_warehouse_is_inserted_stamped_with_its_batch() -> None:
    sql = insert_into_stage_sql("s", "wh_kpis", "0a1b2c3d4e5f", BATCH_A)

    assert sql.startswith("INSERT INTO s (kpi_type, ")
    assert "computed_at" not in sql
    assert sql.endswith(f"CAST(run_id AS VARCHAR(128)), '0a1b2c3d4e5f', '{BATCH_A}' FROM wh_kpis")


@pytest.mark.parametrize("bad", ["", "A" * 32, "a" * 31, "x' OR '1'='1", "a" * 32 + "'"])
def test_a_batch_id_that_is_not_32_hex_digits_never_reaches_sql(bad: str) -> None:
    """Issue 17, item 6: Load takes batch ids from documents in S3; none becomes SQL."""
    loaded_at = dt.datetime(2024, 6, 26, tzinfo=dt.UTC)
    day = dt.date(2024, 6, 25)
    with pytest.raises(ValueError, match="not a stage batch id"):
        insert_from_stage_sql(
            "t", "s", [StageBatch(day, BATCH_A, 3), StageBatch(day, bad, 3)], loaded_at
        )
    with pytest.raises(ValueError, match="not a stage batch id"):
        insert_into_stage_sql("s", "wh_kpis", "0a1b2c3d4e5f", bad)


def test_load_takes_exactly_the_named_batches_checks_their_rows_and_keeps_them() -> None:
    """The review found a load run again after its commit emptied its warehouse dates (it
    had cleared their stage rows): the batches taken are kept, every other batch of the
    dates goes, and a batch whose rows are not all there rolls the load back."""
    loaded_at = dt.datetime(2024, 6, 26, 3, 4, 5, tzinfo=dt.UTC)
    d1, d2 = dt.date(2024, 6, 24), dt.date(2024, 6, 25)

    check, insert = insert_from_stage_sql(
        "t", "s", [StageBatch(d2, BATCH_B, 7), StageBatch(d1, BATCH_A, 5)], loaded_at
    )

    where = f"WHERE batch_id IN ('{BATCH_A}', '{BATCH_B}') AND kpi_date IN ('{d1}', '{d2}')"
    assert check == (
        "SELECT CAST(CASE WHEN count(*) = 12 THEN '0' ELSE 'the stage table lacks rows of "
        f"the batches this load takes' END AS INTEGER) AS stage_rows_present FROM s {where}"
    )
    assert insert.endswith(f"FROM s {where}")
    assert clear_stage_sql("s", [d2], [StageBatch(d2, BATCH_B, 7)], loaded_at) == [
        f"DELETE FROM s WHERE kpi_date IN ('{d2}') AND batch_id NOT IN ('{BATCH_B}')",
        "DELETE FROM s WHERE computed_at < TIMESTAMP '2024-06-19 03:04:05'",
    ]
