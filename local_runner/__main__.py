"""``python -m local_runner [--data DIR] [--out DIR] [--state DIR] [--engine E]`` (what
``make run`` calls)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
    args = parser.parse_args(argv)
    try:
        return run_local(
            args.data.resolve() if args.data else None,
            args.out.resolve(),
            args.state.resolve(),
            engine=args.engine,
            run_input=execution_input(args),
        )
    except (UsageError, DataError, TemplateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def execution_input(args: argparse.Namespace) -> dict[str, Any]:
    """The state machine's input for ``make run RECOMPUTE=... | REPLAY=... | REVALIDATE=...``
    (checked by its CheckRequest step, as in AWS: here only the command line's own shape)."""
    revalidate = getattr(args, "revalidate", None)
    full_extract = getattr(args, "full_extract", False)
    operations = [n for n, v in (("RECOMPUTE", args.recompute), ("REPLAY", args.replay),
                                 ("REVALIDATE", revalidate)) if v]  # fmt: skip
    if len(operations) > 1:
        raise UsageError(
            f"{' and '.join(operations)} cannot be asked in one run: one, then the other"
        )
    if getattr(args, "preflight", False):
        if operations or full_extract:
            raise UsageError(
                "PREFLIGHT touches no data: it goes without RECOMPUTE, REPLAY, REVALIDATE or "
                "FULL_EXTRACT"
            )
        return {"preflight": True}
    if args.catalogue and not args.recompute:
        raise UsageError("CATALOGUE goes with RECOMPUTE=FROM..TO")
    if args.dates and not args.replay:
        raise UsageError("DATES goes with REPLAY=REASONS (RECOMPUTE takes its own range)")
    run_input: dict[str, Any] = {"full_extract": True} if full_extract else {}
    if args.recompute:
        date_from, date_to = _range("RECOMPUTE", args.recompute)
        run_input["recompute"] = {
            "from": date_from,
            "to": date_to,
            "catalogue": args.catalogue or "pinned",
        }
    elif args.replay:
        replay: dict[str, Any] = {"reasons": [r.strip() for r in args.replay.split(",")]}
        if args.dates:
            replay["from"], replay["to"] = _range("DATES", args.dates)
        run_input["replay_quarantine"] = replay
    elif revalidate:
        date_from, date_to = _range("REVALIDATE", revalidate)
        run_input["revalidate"] = {"from": date_from, "to": date_to}
    return run_input


def _range(name: str, text: str) -> tuple[str, str]:
    date_from, separator, date_to = text.partition("..")
    if not separator:
        date_from = date_to = text  # one date
    return date_from.strip(), date_to.strip()


if __name__ == "__main__":
    sys.exit(main())
