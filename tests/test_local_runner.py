"""`make run`'s interface: DATA, OUT, STATE, the output files and the exit code."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_runner.__main__ import main
from local_runner.databases import postgres_running
from local_runner.run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, WAREHOUSE_COLUMNS, run_local
from local_runner.sample_data import SampleConfig, generate
from local_runner.state import StateFolder
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


SMALL = SampleConfig(seed=5, users=60, tracks=100, days=2, plays_per_day=600)


def run(data_dir, state, template, out=None):
    console = io.StringIO()
    code = run_local(data_dir, out or state / "out", state, console=console, template=template)
    return code, console.getvalue()


def test_a_run_killed_while_saving_state_loses_nothing_and_leaves_no_warehouse_ahead(
    tmp_path, synthesized_template, monkeypatch
):
    """STATE was saved by deleting the old copy and renaming the new one in: a kill between
    the two restored none of the objects; and the warehouse, committed before the save, was
    left ahead of the saved ledger. Run 2 brings file B and dies saving; run 3 without B
    must find run 1's state whole and a warehouse with run 1's KPIs, not B's."""
    data = generate(tmp_path / "data", SMALL)
    first_day, second_day = data.stream_files[0], data.stream_files[1]
    only_a = tmp_path / "only-a"
    only_a.mkdir()
    for path in (data.users_csv, data.songs_csv, first_day):
        (only_a / path.name).write_bytes(path.read_bytes())
    state = tmp_path / "state"
    assert run(only_a, state, synthesized_template)[0] == EXIT_OK

    with_b = tmp_path / "with-b"
    with_b.mkdir()
    for path in (data.users_csv, data.songs_csv, first_day, second_day):
        (with_b / path.name).write_bytes(path.read_bytes())
    rename, replace = Path.rename, os.replace

    def in_state(target) -> bool:
        return str(target).startswith(str(state))

    def killed_rename(self, target):  # the process dies as the new copy goes into STATE
        if in_state(target):
            raise KeyboardInterrupt
        return rename(self, target)

    def killed_replace(source, target, *args, **kwargs):
        if in_state(target):
            raise KeyboardInterrupt
        return replace(source, target, *args, **kwargs)

    monkeypatch.setattr(Path, "rename", killed_rename)
    monkeypatch.setattr(os, "replace", killed_replace)
    with pytest.raises(KeyboardInterrupt):
        run(with_b, state, synthesized_template)
    monkeypatch.undo()

    code, console = run(only_a, state, synthesized_template)

    assert code == EXIT_OK, console
    summary = json.loads((state / "out" / "run_summary.json").read_text())
    assert summary["files_already_processed"] == 1  # run 1's ledger, restored whole
    assert re.search(r"s3\s+[1-9][\d,]* objects restored", console)
    assert "the warehouse was ahead of STATE's last save" in console
    table = list(csv.DictReader((state / "out" / "music_kpi_metrics.csv").open()))
    reference = compute_reference(data.users_csv, data.songs_csv, [first_day])
    assert len(table) == len(reference.genre_rows) + len(reference.hourly_rows)


def test_a_second_run_on_a_state_in_use_is_refused(tmp_path, synthesized_template):
    data = generate(tmp_path / "data", SMALL)
    state = tmp_path / "state"
    with StateFolder(state).in_use():  # another make run holds STATE
        code, console = run(data.users_csv.parent, state, synthesized_template)
    assert code == EXIT_USAGE
    assert "is in use by another `make run`" in console


def test_an_embedded_postgresql_left_by_a_killed_run_is_reused_then_stopped(
    tmp_path, synthesized_template
):
    data = generate(tmp_path / "data", SMALL)
    state = tmp_path / "state"
    killed = (  # a run that started the server, then died without stopping it
        "import os, sys, pgserver; pgserver.get_server(sys.argv[1], cleanup_mode='stop'); "
        "os._exit(0)"
    )
    state.mkdir()
    subprocess.run([sys.executable, "-c", killed, str(state / "postgres")], check=True)
    assert postgres_running(state / "postgres")

    code, console = run(data.users_csv.parent, state, synthesized_template)

    assert code == EXIT_OK, console
    assert "the embedded PostgreSQL a killed run left running is reused" in console
    assert not postgres_running(state / "postgres")


def test_python_m_local_runner_can_import_the_lambda_code_by_itself():
    """`make run` starts `python -m local_runner` without PYTHONPATH. Its lazy import of the
    Lambda code (`kpi_pipeline`) failed while every in-process test passed: pytest puts
    `lambdas/` on the path itself. The local runner must do it, as Lambda does."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import local_runner.run; import kpi_pipeline.layout, transform.handler, load.handler"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_source_of_ones_own_is_read_as_it_is_and_never_written(
    tmp_path, synthesized_template, monkeypatch, new_database
):
    """RDS_DSN: the user's own tables (a row, a column of their own) are read, never
    replaced: DATA's users.csv and songs.csv are not loaded there, and the console says
    which source the run read."""
    import psycopg2

    from local_runner.databases import replace_source_tables

    data = generate(tmp_path / "data", SMALL)
    source, warehouse = new_database("own_source"), new_database("own_warehouse")
    replace_source_tables(source, data.users_csv, data.songs_csv)
    conn = psycopg2.connect(source)
    with conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE users ADD COLUMN loyalty TEXT DEFAULT 'gold'")
        cur.execute("INSERT INTO users (user_id, user_name) VALUES (999999, 'Mine')")
    conn.close()
    monkeypatch.setenv("RDS_DSN", source)
    monkeypatch.setenv("WAREHOUSE_DSN", warehouse)
    (tmp_path / "data" / "users.csv").write_text("user_id\n1\n")  # would replace theirs

    code, console = run(data.users_csv.parent, tmp_path / "state", synthesized_template)

    assert code == EXIT_OK, console
    assert "source $RDS_DSN (your own tables, read only" in console
    conn = psycopg2.connect(source)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE loyalty = 'gold') FROM users")
        assert cur.fetchone() == (SMALL.users + 1, SMALL.users + 1)
        # no role of the runner's created on their server either
        cur.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = current_database() || '_extract'"
        )
        assert cur.fetchone() == (0,)
    conn.close()


def test_the_csv_for_people_neutralises_formulas_and_the_state_dump_keeps_values(
    tmp_path, new_database
):
    """A genre or a track named like a spreadsheet formula (=, +, -, @, tab, CR first) is
    exported with a leading apostrophe in out/music_kpi_metrics.csv, the file people open;
    the dump STATE restores the warehouse from keeps every value as it is."""
    import psycopg2

    from kpi_pipeline.warehouse.schema import create_table_sql
    from local_runner.databases import export_table, restore_table

    dsn = new_database("csv")
    names = ["=HYPERLINK(\"https://evil.example\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
             "\tTab", "\rCR", "rock", "a=b"]  # fmt: skip
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(create_table_sql("music_kpi_metrics", redshift=False))
        for name in names:
            cur.execute(
                "INSERT INTO music_kpi_metrics (kpi_type, kpi_date, track_genre, "
                "most_popular_track, listen_count) VALUES ('genre', '2024-06-25', %s, %s, 1)",
                (name, name),
            )
    conn.close()

    people, dump = tmp_path / "people.csv", tmp_path / "dump.csv"
    export_table(dsn, "music_kpi_metrics", WAREHOUSE_COLUMNS, people, for_people=True)
    export_table(dsn, "music_kpi_metrics", WAREHOUSE_COLUMNS, dump)

    shown = sorted(row["track_genre"] for row in csv.DictReader(people.open(newline="")))
    assert shown == sorted(name if name in ("rock", "a=b") else f"'{name}" for name in names)
    assert (
        sorted(row["most_popular_track"] for row in csv.DictReader(people.open(newline="")))
        == shown
    )
    other = new_database("csv_restored")
    assert restore_table(other, "music_kpi_metrics", WAREHOUSE_COLUMNS, dump) == len(names)
    conn = psycopg2.connect(other)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT track_genre FROM music_kpi_metrics ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == sorted(names)
    conn.close()


@pytest.mark.parametrize("variable", ["RDS_DSN", "WAREHOUSE_DSN"])
def test_a_dsn_with_an_unencoded_at_in_its_password_is_refused_before_any_connection(
    monkeypatch, tmp_path, variable
):
    from local_runner.databases import DataError, local_databases

    good = "postgresql://kpi:fine@127.0.0.1:1/db"
    monkeypatch.setenv("RDS_DSN", good)
    monkeypatch.setenv("WAREHOUSE_DSN", good)
    monkeypatch.setenv(variable, "postgresql://kpi:Sup3r@Secret@127.0.0.1:1/db")
    refused = rf"\${variable}'s user info holds an unencoded '@'"
    with pytest.raises(DataError, match=refused) as e, local_databases(tmp_path):
        pass
    assert "Secret" not in str(e.value)


# --- issue 21: the exit status, the request checked before anything starts -----------------


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def test_a_usage_error_ends_with_its_exit_status_and_what_it_means(tmp_path, capsys):
    """`make run` exits 2 on any failure (make's own): the runner's status is its last line."""
    code = main(["--data", str(tmp_path / "no-such-folder"), "--state", str(tmp_path / "state")])

    said = capsys.readouterr()
    assert code == EXIT_USAGE == 2
    assert "is not a folder" in said.err
    assert last_line(said.out) == "exit status 2: usage error, nothing was run"

    with pytest.raises(SystemExit) as refused:  # ENGINE=spark: argparse's own refusal
        main(["--engine", "spark"])
    assert refused.value.code == EXIT_USAGE
    said = capsys.readouterr()
    assert "invalid choice: 'spark'" in said.err
    assert last_line(said.out) == "exit status 2: usage error, nothing was run"


def test_a_failed_run_ends_with_exit_status_1(tmp_path, capsys, monkeypatch, synthesized_template):
    """Files arrived and not one play was accepted (files_rejected): the run failed."""
    data = tmp_path / "data"
    sample = generate(data, SampleConfig(seed=6, users=20, tracks=30, days=0))
    assert [p.name for p in sample.stream_files] == ["streams_bad_header.csv"]
    monkeypatch.setattr(
        "local_runner.run.run_local", functools.partial(run_local, template=synthesized_template)
    )

    code = main(["--data", str(data), "--state", str(tmp_path / "state"), "--out", str(tmp_path)])

    said = capsys.readouterr().out
    assert code == EXIT_FAILED == 1, said
    assert "Result: files_rejected" in said
    assert re.search(r"^  IngestStreams +[\d.]+ s \(1 files\)$", said, re.M)  # not in the log
    assert last_line(said) == "exit status 1: the run failed"


def refuse_to_start(*args, **kwargs):
    raise AssertionError("the run started")


BAD_REQUESTS = [
    (["--recompute", "2024-06-31..2024-07-02"], "recompute.from"),
    (["--recompute", "2024-06-24..2024-6-27"], "recompute.to"),
    (["--revalidate", "2024-06-27..2024-06-24"], "revalidate.from"),
    (["--replay", "unknown_user_id", "--dates", "2024-06-24..24-06-2024"], "replay_quarantine.to"),
    (["--replay", "unknown_user_id,unkown_track_id"], "replay_quarantine.reasons"),
    (["--recompute", "2020-01-01..2024-12-31"], "max_recompute_days"),
]


@pytest.mark.parametrize(("args", "field"), BAD_REQUESTS)
def test_a_bad_request_exits_2_at_once_with_check_requests_message(
    tmp_path, capsys, monkeypatch, args, field
):
    """A typo in a date cost 10-16 s (PostgreSQL, synth, moto) and an alert: the request is
    checked by CheckRequest's own parser before anything starts."""
    import argparse

    from kpi_pipeline.errors import InvalidRequest
    from kpi_pipeline.requests import check_request
    from local_runner.__main__ import execution_input

    monkeypatch.setattr("local_runner.run.run_local", refuse_to_start)
    state = tmp_path / "state"

    started = time.monotonic()
    code = main([*args, "--state", str(state), "--out", str(tmp_path / "out")])
    seconds = time.monotonic() - started

    said = capsys.readouterr()
    assert code == EXIT_USAGE, said
    assert seconds < 1.0
    assert field in said.err
    asked = dict.fromkeys(("recompute", "catalogue", "replay", "dates", "revalidate"))
    for option, value in zip(args[::2], args[1::2], strict=True):
        asked[option.removeprefix("--")] = value
    run_input = execution_input(argparse.Namespace(**asked))
    with pytest.raises(InvalidRequest) as refused:
        check_request(run_input, max_recompute_days=366)  # cdk.json's local: the default
    assert str(refused.value) in said.err  # CheckRequest's own words
    assert last_line(said.out) == "exit status 2: usage error, nothing was run"
    assert not state.exists()  # no lock taken, no database, no moto


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--recompute", "2024-06-24..2024-06-27", "--catalogue", "current"],
            {"recompute": {"from": "2024-06-24", "to": "2024-06-27", "catalogue": "current"}},
        ),
        (
            ["--replay", "unknown_user_id,unknown_track_id", "--dates", "2024-06-24..2024-06-27"],
            {
                "replay_quarantine": {
                    "reasons": ["unknown_user_id", "unknown_track_id"],
                    "from": "2024-06-24",
                    "to": "2024-06-27",
                }
            },
        ),
        (
            ["--revalidate", "2024-06-25"],
            {"revalidate": {"from": "2024-06-25", "to": "2024-06-25"}},
        ),
        (["--full-extract"], {"full_extract": True}),
        (["--preflight"], {"preflight": True}),
        ([], {}),
    ],
)
def test_print_input_gives_the_execution_input_and_the_aws_cli_command(
    capsys, monkeypatch, args, expected
):
    """What the docs quote for the console and the AWS CLI: the very input `make run` would
    start, checked by CheckRequest's parser; nothing is run."""
    import shlex

    from kpi_pipeline.requests import check_request

    monkeypatch.setattr("local_runner.run.run_local", refuse_to_start)

    assert main(["--print-input", *args]) == EXIT_OK

    lines = capsys.readouterr().out.splitlines()
    console = [line for line in lines if line.startswith("{")]
    assert [json.loads(line) for line in console] == [expected]
    check_request(expected, max_recompute_days=366)
    (command,) = [line for line in lines if line.startswith("aws ")]
    words = shlex.split(command)
    assert words[:4] == ["aws", "stepfunctions", "start-execution", "--state-machine-arn"]
    assert words[4] == "$STATE_MACHINE_ARN"  # shlex drops the shell's quotes
    assert words[5] == "--input" and json.loads(words[6]) == expected
    assert '--state-machine-arn "$STATE_MACHINE_ARN"' in command


def test_print_input_refuses_a_bad_request_as_a_run_would(capsys):
    assert main(["--print-input", "--recompute", "2024-02-30"]) == EXIT_USAGE
    assert "recompute.from must be a date written YYYY-MM-DD, not '2024-02-30'" in (
        capsys.readouterr().err
    )


def test_a_run_of_several_files_prints_how_far_its_maps_are(tmp_path, synthesized_template):
    """IngestStreams and TransformDates printed nothing for minutes (2,000 files: 184 s):
    lines "N of M files done" and "N of M dates done", plain lines whatever stdout is, at
    most one per `progress_seconds` (5 by default; every change here)."""
    data = generate(
        tmp_path / "data", SampleConfig(seed=8, users=40, tracks=60, days=6, plays_per_day=300)
    )
    console = io.StringIO()

    code = run_local(
        data.users_csv.parent,
        tmp_path / "out",
        tmp_path / "state",
        console=console,
        template=synthesized_template,
        progress_seconds=0,
    )

    said = console.getvalue()
    assert code == EXIT_OK, said
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    files = re.findall(r"^  IngestStreams +(\d+) of (\d+) files done \(\d+ s\)$", said, re.M)
    dates = re.findall(r"^  TransformDates +(\d+) of (\d+) dates done \(\d+ s\)$", said, re.M)
    assert files and dates, said
    assert {int(total) for _, total in files} == {len(data.stream_files)}
    assert {int(total) for _, total in dates} == {len(summary["kpi_dates"])}
    for done, total in (*files, *dates):
        assert 1 <= int(done) <= int(total)
    assert [int(done) for done, _ in files] == sorted({int(done) for done, _ in files})
    # the last line of a Map's progress comes before the line of the Map's end
    assert said.rindex(" files done ") < said.index(
        "  IngestStreams  ", said.rindex(" files done ")
    )


def test_a_recompute_of_a_range_without_plays_says_so(tmp_path, synthesized_template):
    """It exited 0 with '0 dates replaced' among the counts: the console says it plainly
    (and docs/operations.md quotes the line)."""
    data = generate(
        tmp_path / "data", SampleConfig(seed=9, users=20, tracks=30, days=1, plays_per_day=100)
    )
    january = {"recompute": {"from": "2024-01-01", "to": "2024-01-31", "catalogue": "pinned"}}
    console = io.StringIO()

    code = run_local(
        data.users_csv.parent,
        tmp_path / "out",
        tmp_path / "state",
        console=console,
        template=synthesized_template,
        run_input=january,
    )

    said = console.getvalue()
    assert code == EXIT_OK, said
    line = (
        "  recompute     no plays in 2024-01-01..2024-01-31: nothing recomputed "
        "(31 dates without an accepted play, left as they are)"
    )
    assert line in said.splitlines(), said
    operations = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    assert line in operations.splitlines()
