"""The walkthroughs of docs/operations.md, run as written on the sample data.

Each command of the "Replay quarantined rows" section is run in order, in a folder of its
own (``make run`` through the arguments ``make -n run`` gives the runner, a Python block as
it is), and each output line the section quotes under a command must be a line that command
printed. The counts are asserted from the data as well, so the page and the runner can only
change together.
"""

from __future__ import annotations

import functools
import io
import json
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import duckdb
import pytest

from local_runner.__main__ import main
from local_runner.run import run_local

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
REPLAY_SECTION = "## Replay quarantined rows"


def section(heading: str) -> str:
    text = OPERATIONS.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def steps_of(text: str) -> list[tuple[str, list[str]]]:
    """Each ```sh block, with the lines of the plain ``` block that follows it (if any)."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)
    steps: list[tuple[str, list[str]]] = []
    for kind, body in blocks:
        if kind == "sh":
            steps.append((body.rstrip("\n"), []))
        elif kind == "" and steps:
            steps[-1][1].extend(body.rstrip("\n").splitlines())
    return steps


def make_run_arguments(command: str) -> list[str]:
    """The runner's arguments for ``make run VAR=...``, as make writes them (dry run)."""
    done = subprocess.run(
        ["make", "-s", "-n", *shlex.split(command)[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(
        line
        for line in done.stdout.replace("\\\n", " ").splitlines()
        if " -m local_runner " in f"{line} "
    )
    words = shlex.split(line)
    return words[words.index("local_runner") + 1 :]


def shows(quoted: str, lines: list[str]) -> bool:
    """A quoted line is a printed line; one ending with " ..." the start of one."""
    if quoted.endswith(" ..."):
        return any(line.startswith(quoted.removesuffix("...")) for line in lines)
    return quoted in lines


def run_step(command: str) -> str:
    """One command of the page, in the current folder; what it printed."""
    if command.startswith("make run"):
        console = io.StringIO()
        with redirect_stdout(console):
            code = main(make_run_arguments(command))
        assert code == 0, console.getvalue()
        return console.getvalue()
    first, _, rest = command.partition("\n")
    assert first == ".venv/bin/python - <<'EOF'" and rest.endswith("\nEOF"), command
    done = subprocess.run(
        [sys.executable, "-"],
        input=rest.removesuffix("EOF"),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def replay_line(said: str) -> dict[str, int]:
    found = re.search(
        r"^  replay +([\d,]+) quarantined rows re-checked.*?; ([\d,]+) accepted .*?"
        r"([\d,]+) still quarantined.*?; ([\d,]+) accepted by an earlier replay "
        r"\(of these reasons and dates\)$",
        said,
        re.M,
    )
    assert found, said
    rechecked, accepted, still, before = (int(g.replace(",", "")) for g in found.groups())
    return {"rechecked": rechecked, "accepted": accepted, "still": still, "before": before}


def test_replay_quarantined_rows_as_the_operations_page_says(
    tmp_path, monkeypatch, synthesized_template
):
    """On the sample: rows quarantined as unknown_track_id; the songs added to a copy of the
    sample (DATA=corrected: the local source tables are DATA's); the dates re-pinned; the
    reason replayed. Replays of another reason, or of other dates, count as "accepted by an
    earlier replay" only the rows of their own reasons and dates."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "local_runner.run.run_local", functools.partial(run_local, template=synthesized_template)
    )
    steps = [s for s in steps_of(section(REPLAY_SECTION)) if "PRINT_INPUT" not in s[0]]
    commands = [command for command, _ in steps]
    assert commands[0] == "make run"
    assert commands[2:] == [
        "make run DATA=corrected RECOMPUTE=2024-06-24..2024-06-27 CATALOGUE=current",
        "make run DATA=corrected REPLAY=unknown_track_id",
        "make run DATA=corrected REPLAY=unknown_user_id",
        "make run DATA=corrected REPLAY=unknown_track_id DATES=2024-06-25",
    ]

    printed = []
    for command, quoted in steps:
        said = run_step(command)
        printed.append(said)
        lines = said.splitlines()
        for line in quoted:  # the page quotes what the command printed
            assert shows(line, lines), f"{command!r} did not print {line!r}:\n{said}"

    daily, added, repinned, tracks, users, one_day = printed
    quarantined = re.search(r"^  quarantined +[\d,]+ rows (\{.*\})$", daily, re.M)
    assert quarantined, daily
    by_reason = json.loads(quarantined.group(1).replace("'", '"'))
    unknown_tracks = by_reason["unknown_track_id"]
    assert unknown_tracks > 0 and by_reason["unknown_user_id"] > 0
    assert f"{unknown_tracks} songs added to corrected/songs.csv" in added
    assert "4 dates replaced" in repinned and "4 pinned to this run's catalogue" in repinned
    assert replay_line(tracks) == {
        "rechecked": unknown_tracks,
        "accepted": unknown_tracks,
        "still": 0,
        "before": 0,
    }
    # another reason: none of its rows was accepted before (it counted the tracks' rows)
    assert replay_line(users)["before"] == 0
    assert replay_line(users)["accepted"] == 0
    # the same reason on one date: that date's rows only (it counted every date's)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    on_the_day = con.execute(
        "SELECT count(*) FROM '.state/saved/*/s3/*databucket*/quarantine/rows/*.parquet' "
        "WHERE reason = 'unknown_track_id' "
        "AND CAST(CAST(listen_time AS TIMESTAMPTZ) AS DATE) = DATE '2024-06-25'"
    ).fetchone()
    assert on_the_day is not None and 0 < on_the_day[0] < unknown_tracks
    assert replay_line(one_day) == {
        "rechecked": 0,
        "accepted": 0,
        "still": 0,
        "before": on_the_day[0],
    }


def refuse_to_start(*args, **kwargs):
    raise AssertionError("the run started")


def test_the_requests_the_page_shows_without_a_run_print_what_it_quotes(monkeypatch, capsys):
    """`make run ... PRINT_INPUT=1` (the console's and the AWS CLI's input), and a refused
    request: the page quotes exactly what they print; nothing starts."""
    monkeypatch.setattr("local_runner.run.run_local", refuse_to_start)
    checked = 0
    for command, quoted in steps_of(OPERATIONS.read_text()):
        refused = "exit status 2: usage error, nothing was run" in quoted
        if "PRINT_INPUT=1" not in command and not refused:
            continue
        code = main(make_run_arguments(command))
        said = capsys.readouterr()
        assert code == (2 if refused else 0), said
        assert (said.err + said.out).splitlines() == quoted, command
        checked += 1
    assert checked == 3
