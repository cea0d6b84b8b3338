"""The warehouse engine's KPI SQL (``sql/warehouse/date_kpis.sql``) as statements to run.

The file is written in the SQL that Amazon Redshift and PostgreSQL share; its placeholders
are filled here with literals (the Data API runs a batch of statements without parameters),
from a date and a run id that the contracts have already validated. No third-party import:
the function that talks to the warehouse carries no DuckDB.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources

# The temporary tables the statements read, with the columns each must hold.
INPUT_TABLES: dict[str, str] = {
    "wh_curated_plays": "user_id BIGINT, track_id VARCHAR(256), listen_time TIMESTAMP",
    "wh_songs": (
        "track_id VARCHAR(256), track_genre VARCHAR(256), track_name VARCHAR(1024), "
        "popularity INTEGER, duration_ms BIGINT"
    ),
    "wh_song_artists": "track_id VARCHAR(256), artist VARCHAR(1024)",
}
OUTPUT_TABLE = "wh_kpis"


def date_kpi_statements(kpi_date: dt.date, run_id: str) -> list[str]:
    """The statements that compute ``wh_kpis`` for one date, in order."""
    text = (
        resources.files("kpi_pipeline")
        .joinpath("sql", "warehouse", "date_kpis.sql")
        .read_text(encoding="utf-8")
    )
    text = text.replace("{kpi_date}", f"DATE '{kpi_date.isoformat()}'")
    text = text.replace("{run_id}", "'" + run_id.replace("'", "''") + "'")
    statements = []
    for chunk in re.split(r";\s*\n", text):
        code = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--"))
        if code.strip():
            statements.append(code.strip().rstrip(";"))
    return statements
