"""`make run`'s interface: DATA, OUT, STATE, the output files and the exit code."""

from __future__ import annotations

import csv
import io
import json

import pytest

from local_runner.__main__ import main
from local_runner.run import EXIT_OK, EXIT_USAGE, WAREHOUSE_COLUMNS, run_local
from local_runner.sample_data import SampleConfig, generate
from tests.reference_kpis import compute_reference

pytestmark = pytest.mark.e2e


def test_two_runs_with_the_same_data_and_state(tmp_path, synthesized_template):
    data = generate(
        tmp_path / "data", SampleConfig(seed=3, users=80, tracks=150, days=2, plays_per_day=1500)
    )
    out, state = tmp_path / "out", tmp_path / "state"
    console = io.StringIO()

    code = run_local(
        data.users_csv.parent, out, state, console=console, template=synthesized_template
    )

    assert code == EXIT_OK, console.getvalue()
    summary = json.loads((out / "run_summary.json").read_text())
    reference = compute_reference(data.users_csv, data.songs_csv, data.stream_files)
    assert summary["status"] == "loaded"
    for field in (
        "run_id",
        "files_processed",
        "files_already_processed",
        "files_quarantined",
        "plays_valid",
        "duplicates",
        "rows_quarantined",
        "kpi_dates",
    ):
        assert field in summary
    assert summary["plays_valid"] == reference.plays_valid
    assert summary["rows_quarantined"] == reference.rows_quarantined
    table = (out / "music_kpi_metrics.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(table)))
    assert list(rows[0]) == WAREHOUSE_COLUMNS
    assert len(rows) == len(reference.genre_rows) + len(reference.hourly_rows)
    assert "Result: loaded" in console.getvalue()
    assert (state / "logs" / f"{summary['run_id']}.jsonl").stat().st_size > 0

    second = run_local(
        data.users_csv.parent, out, state, console=io.StringIO(), template=synthesized_template
    )

    assert second == EXIT_OK
    again = json.loads((out / "run_summary.json").read_text())
    assert again["status"] == "no_new_files"
    assert again["files_already_processed"] == summary["files_processed"]
    assert again["plays_valid"] == 0
    assert (out / "music_kpi_metrics.csv").read_text() == table  # warehouse unchanged


def test_a_fresh_state_folder_starts_empty(tmp_path, synthesized_template):
    data = generate(
        tmp_path / "data", SampleConfig(seed=4, users=50, tracks=80, days=1, plays_per_day=500)
    )
    for state in ("state-a", "state-b"):
        code = run_local(
            data.users_csv.parent,
            tmp_path / state / "out",
            tmp_path / state,
            console=io.StringIO(),
            template=synthesized_template,
        )
        assert code == EXIT_OK
        summary = json.loads((tmp_path / state / "out" / "run_summary.json").read_text())
        assert summary["status"] == "loaded"
        assert summary["files_already_processed"] == 0


def test_data_without_users_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "songs.csv").write_text("id\n")

    code = main(["--data", str(tmp_path), "--state", str(tmp_path / "state")])

    assert code == EXIT_USAGE
    assert "lacks users.csv" in capsys.readouterr().err
