"""``python -m local_runner [--data DIR] [--out DIR] [--state DIR] [--engine E] ...`` (what
``make run`` calls).

Its exit status is 0 (the run succeeded), 1 (the run failed) or 2 (a usage error: nothing
was run), and its last line says which: ``make run`` itself exits 2 on any failure, so a
script that needs the status calls ``.venv/bin/python -m local_runner`` with the same options
(``make -n run ...`` prints them). The request is checked before anything starts
(local_runner.request); ``--print-input`` only prints it for the console and the AWS CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from local_runner.request import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    execution_input,
    exit_line,
    precheck,
    start_execution_lines,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make run",
        description="Run the pipeline's state machine locally, end to end.",
        epilog="Exit status: 0 the run succeeded, 1 it failed, 2 a usage error (nothing was "
        "run); the last line says which. make exits 2 on any failure: scripts call "
        ".venv/bin/python -m local_runner with the same options (make -n run ... shows them).",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="users.csv, songs.csv, streams*.csv"
    )
    parser.add_argument("--out", type=Path, default=Path("out"), help="where results go")
    parser.add_argument("--state", type=Path, default=Path(".state"), help="kept between runs")
    parser.add_argument(
        "--engine",
        choices=["lambda", "warehouse", "auto"],
        default=None,
        help="transform.engine: DuckDB in Lambda, SQL in the warehouse, or auto by plays "
        "(default: cdk.json's local environment)",
    )
    parser.add_argument(
        "--recompute",
        metavar="FROM..TO",
        help="recompute and replace these dates (YYYY-MM-DD..YYYY-MM-DD) from every accepted play",
    )
    parser.add_argument(
        "--catalogue",
        choices=["pinned", "current"],
        default=None,
        help="with --recompute: keep each date's catalogue, or re-pin to today's",
    )
    parser.add_argument(
        "--replay",
        metavar="REASONS",
        help="re-check quarantined rows of these reasons (comma-separated), e.g. "
        "unknown_user_id,unknown_track_id",
    )
    parser.add_argument("--dates", metavar="FROM..TO", help="with --replay: only these dates")
    parser.add_argument(
        "--revalidate",
        metavar="FROM..TO",
        help="re-check the accepted plays of these dates against their pins; move those that "
        "fail now to the quarantine and recompute their dates",
    )
    parser.add_argument(
        "--full-extract",
        action="store_true",
        help='read the source tables whole ({"full_extract": true})',
    )
    parser.add_argument(
        "--preflight",
        action="store_true",
        help="check, with each step's own role, what the pipeline needs; keep nothing",
    )
    parser.add_argument(
        "--print-input",
        action="store_true",
        help="print the execution input these options ask for (for the Step Functions "
        "console and `aws stepfunctions start-execution`), checked; run nothing",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own refusal (2), or --help (0)
        if exc.code == EXIT_USAGE:
            print(exit_line(EXIT_USAGE), flush=True)
        raise
    try:
        run_input = execution_input(args)
        precheck(run_input)  # CheckRequest's own parser, before anything starts
    except UsageError as exc:
        return _refused(exc, status_line=not args.print_input)
    if args.print_input:
        print("\n".join(start_execution_lines(run_input)))
        return EXIT_OK
    code = _run(args, run_input)
    print(exit_line(code), flush=True)
    return code


def _run(args: argparse.Namespace, run_input: dict[str, Any]) -> int:
    # Imported here: a refused request never loads moto, boto3's clients or psycopg2.
    from local_runner.databases import DataError
    from local_runner.run import run_local
    from local_runner.template import TemplateError

    try:
        return run_local(
            args.data.resolve() if args.data else None,
            args.out.resolve(),
            args.state.resolve(),
            engine=args.engine,
            run_input=run_input,
        )
    except (UsageError, DataError, TemplateError) as exc:
        return _refused(exc, status_line=False)


def _refused(exc: Exception, *, status_line: bool) -> int:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    if status_line:
        print(exit_line(EXIT_USAGE), flush=True)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
