"""``python -m reporting [--out DIR] [--dsn DSN] [--state DIR] [--summaries WHERE]`` (what
``make report`` calls): writes ``OUT/kpi_report.html``.

Warehouse DSNs (``--dsn``; default: the local warehouse ``make run`` keeps in STATE)::

    postgresql://user:password@host:5432/database
    redshift://<workgroup>/<database>[?secret_arn=ARN][&region=R]
    redshift://<cluster>/<database>?cluster=1&db_user=U|secret_arn=ARN[&region=R]

Run summaries (``--summaries``, else ``$REPORT_SUMMARIES``; default: STATE's saved
snapshot): ``s3://<data bucket>[/prefix]`` or a folder holding ``runs/<run>/summary.json``.
Details in :mod:`reporting.sources`. Passwords are never printed: DSNs are shown masked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from botocore.exceptions import NoCredentialsError

from reporting.page import Meta, render
from reporting.sources import DEFAULT_TABLE, ReportError, UsageError, open_sources, redact

EXIT_ERROR, EXIT_USAGE = 1, 2
REPORT_NAME = "kpi_report.html"
# The KPI definitions the page links, relatively: the link works wherever OUT is.
DEFINITIONS = Path(__file__).resolve().parent.parent / "docs" / "kpis.md"
NO_CREDENTIALS = (
    "no AWS credentials found to read Redshift or S3: set AWS_PROFILE (a profile of "
    "~/.aws/config, e.g. after `aws sso login --profile P`), or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or run where a role provides them"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make report",
        description="Write OUT/kpi_report.html: the warehouse's KPIs per day, the hourly "
        "curve, quarantines and runs, in one self-contained HTML file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="DSN forms:\n"
        "  postgresql://user:password@host:5432/database\n"
        "  redshift://<workgroup>/<database>[?secret_arn=ARN][&region=R]   (Serverless)\n"
        "  redshift://<cluster>/<database>?cluster=1&db_user=U  (or &secret_arn=ARN)\n"
        "Redshift is read through the Data API with boto3's credentials; its run summaries\n"
        "come from --summaries s3://<data bucket>/ (or $REPORT_SUMMARIES).",
    )
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder of the report")
    parser.add_argument(
        "--dsn",
        default=None,
        help="the warehouse (default: the local one that `make run` keeps in STATE)",
    )
    parser.add_argument(
        "--state", type=Path, default=Path(".state"), help="`make run`'s STATE folder"
    )
    parser.add_argument(
        "--summaries",
        default=None,
        help="s3://bucket[/prefix] or a folder with runs/*/summary.json "
        "(default: $REPORT_SUMMARIES, else STATE's saved snapshot)",
    )
    parser.add_argument(
        "--table",
        default=os.environ.get("WAREHOUSE_TABLE", DEFAULT_TABLE),
        help="the KPI table, optionally schema-qualified (default: $WAREHOUSE_TABLE or "
        f"{DEFAULT_TABLE})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # bad arguments: argparse's message, exit 2
    try:
        path, line = write_report(
            args.out, args.dsn, args.state.resolve(), args.summaries, args.table
        )
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"error: {redact(str(exc), args.dsn)}", file=sys.stderr)
        return EXIT_USAGE
    except ReportError as exc:
        print(f"error: {redact(str(exc), args.dsn)}", file=sys.stderr)
        return EXIT_ERROR
    except NoCredentialsError:  # boto3's chain found none: Redshift's Data API, S3 summaries
        print(f"error: {NO_CREDENTIALS}", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    print(line)
    return 0


def write_report(
    out: Path, dsn: str | None, state: Path, summaries: str | None, table: str
) -> tuple[Path, str]:
    """Read every source, render, write: returns the file and a one-line summary."""
    with open_sources(dsn, state, summaries, table) as sources:
        rows = sources.kpis.read_kpis()
        runs = sources.summaries()
        meta = Meta(
            dt.datetime.now(dt.UTC),
            sources.warehouse,
            sources.summaries_from,
            table,
            definitions=Path(os.path.relpath(DEFINITIONS, out.resolve())).as_posix(),
        )
    page = render(rows, runs, meta)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    dates = len({str(r.get("kpi_date"))[:10] for r in rows})
    line = (
        f"report: {dates} dates, {len(rows)} KPI rows, {len(runs)} runs "
        f"from {sources.warehouse}; {len(page.encode()):,} bytes"
    )
    return path, line


if __name__ == "__main__":
    sys.exit(main())
