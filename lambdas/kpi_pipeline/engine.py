"""DuckDB, the transform engine: one connection per call (Map iterations run in parallel).

SQL lives in ``kpi_pipeline/sql``; Python only moves data in and out. Every connection
works in UTC, may spill to the scratch directory, and knows the project's macros.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import duckdb

from kpi_pipeline.settings import EngineSettings


@cache
def sql(name: str) -> str:
    """The text of ``kpi_pipeline/sql/<name>`` (e.g. ``marts/hourly_kpis.sql``)."""
    return resources.files("kpi_pipeline").joinpath("sql", name).read_text(encoding="utf-8")


def connect(
    settings: EngineSettings, scratch: Path, *, spill_limit_mb: int | None = None
) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB that spills to ``scratch`` (at most ``spill_limit_mb``) and
    computes in UTC. It never downloads or loads an extension: what it needs (Parquet, JSON,
    ICU) is built in, and a crafted path must not make it fetch code."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
    }
    if settings.duckdb_threads:
        config["threads"] = settings.duckdb_threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = {literal(scratch / 'duckdb-spill')}")
    if spill_limit_mb is not None:
        con.execute(f"SET max_temp_directory_size = '{int(spill_limit_mb)}MB'")
    # Nothing here depends on row order; dropping the guarantee lets DuckDB stream more.
    con.execute("SET preserve_insertion_order = false")
    if settings.memory_limit_mb:
        con.execute(f"SET memory_limit = '{int(settings.memory_limit_mb)}MB'")
    con.execute(sql("macros.sql"))
    return con


def create_view(con: duckdb.DuckDBPyConnection, name: str, model: str) -> None:
    """Create the temporary view ``name`` from the SQL model file ``model``."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql(model)}")


def create_table(con: duckdb.DuckDBPyConnection, name: str, model: str) -> None:
    """Materialise the SQL model file ``model`` as the temporary table ``name``."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql(model)}")


def append_to_table(con: duckdb.DuckDBPyConnection, name: str, model: str) -> None:
    """Append the rows of the SQL model file ``model`` to the table ``name``."""
    con.execute(f"INSERT INTO {name} BY NAME {sql(model)}")


def literal(value: str | Path) -> str:
    """A quoted SQL string literal (a scratch file path, an S3 key), for statements DuckDB
    cannot prepare with parameters (views, COPY, settings)."""
    return "'" + str(value).replace("'", "''") + "'"


def parquet_list(paths: list[Path]) -> str:
    """A DuckDB list literal of parquet paths."""
    return "[" + ", ".join(literal(p) for p in paths) + "]"


def scalar(con: duckdb.DuckDBPyConnection, query: str, params: list[object] | None = None) -> int:
    """The single integer a query returns (0 when it returns no row)."""
    row = con.execute(query, params or []).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
