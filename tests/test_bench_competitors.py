"""The bench's competitors (benchmarks.quick) compute the KPIs KPIS.md defines.

``make bench`` compares the pipeline's speed with quick DuckDB and Polars scripts: a
script that computed other numbers would make the comparison meaningless. On the bench's
data, small (the generator's dirt: malformed rows of every class, duplicates, late rows,
several timestamp spellings), each script's KPI rows equal the reference computation's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import quick
from benchmarks.data import DataSet, materialise
from tests.reference_kpis import compute_reference

# The bench's data, small: its generator, its dirt and its files (three columns each).
SAMPLE = DataSet("competitors", plays=60_000, files=3, days=2, users=300, tracks=900)


@pytest.mark.parametrize("script", [quick.duckdb_kpis, quick.polars_kpis])
def test_quick_script_computes_the_reference_kpis(
    tmp_path: Path, script: Callable[..., dict[str, Any]]
) -> None:
    files = materialise(SAMPLE, tmp_path)
    reference = compute_reference(files.users_csv, files.songs_csv, files.streams)

    result = script(str(files.users_csv), str(files.songs_csv), [str(p) for p in files.streams])

    expected = quick.keyed(reference.genre_rows + reference.hourly_rows)
    assert quick.differences(expected, result["kpis"]) == []
    # every distinct play once, whichever file it came in
    assert result["rows"] == sum(row["listen_count"] for row in reference.hourly_rows)
    assert result["kpi_rows"] == len(expected)


def test_differences_names_every_row_that_differs() -> None:
    rows = [
        {"kpi_date": "2024-06-25", "track_genre": "pop", "listen_count": 3,
         "avg_track_duration_sec": 210.0, "popularity_index": 83.3, "most_popular_track": "A",
         "most_popular_track_id": "a"},
        {"kpi_date": "2024-06-25", "stream_hour": 10, "listen_count": 3, "unique_listeners": 2,
         "top_artists": "Y", "track_diversity_index": 2 / 3},
    ]  # fmt: skip
    expected = quick.keyed(rows)
    close = quick.keyed([{**rows[0], "popularity_index": 83.3 * (1 + 1e-12)}, rows[1]])
    other = quick.keyed([{**rows[0], "listen_count": 4}, {**rows[1], "stream_hour": 11}])

    assert quick.differences(expected, close) == []
    assert quick.differences(expected, other) == [
        "genre 2024-06-25 pop",
        "hourly 2024-06-25 10",
        "hourly 2024-06-25 11",
    ]


def test_a_step_s_peak_is_its_own_not_the_parent_s(tmp_path: Path) -> None:
    """ru_maxrss survives fork and exec: a step started by a bench that held 400 MB (the
    poison files' rows) reported 400 MB whatever it used. The figure is the child's own."""
    held = bytearray(400 * 2**20)
    held[::4096] = b"\x01" * len(range(0, len(held), 4096))  # resident, not just reserved
    done = subprocess.run(
        [sys.executable, "-c", "from benchmarks.__main__ import peak_mb; print(peak_mb())"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    del held

    assert float(done.stdout) < 200
