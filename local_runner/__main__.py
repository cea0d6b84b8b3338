"""``python -m local_runner [--data DIR] [--out DIR] [--state DIR] [--engine E]`` (what
``make run`` calls)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from local_runner.databases import DataError
from local_runner.run import EXIT_USAGE, UsageError, run_local
from local_runner.template import TemplateError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make run", description="Run the pipeline's state machine locally, end to end."
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
    args = parser.parse_args(argv)
    try:
        return run_local(
            args.data.resolve() if args.data else None,
            args.out.resolve(),
            args.state.resolve(),
            engine=args.engine,
        )
    except (UsageError, DataError, TemplateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
