"""What ``make run`` asks for, checked before anything starts, and what its exit status means.

``make run RECOMPUTE=... | REPLAY=... [DATES=...] | REVALIDATE=... | PREFLIGHT=1`` becomes the
state machine's input (:func:`execution_input`), which CheckRequest's own parser
(:func:`kpi_pipeline.requests.check_request`, with the local environment's
``max_recompute_days``) checks here first (:func:`precheck`): a typo in a date is refused in
a fraction of a second, before PostgreSQL, the synth or moto start. CheckRequest stays the
server-side guard, as in AWS. :func:`start_execution_lines` gives the same input for the
Step Functions console and the AWS CLI (``make run ... PRINT_INPUT=1``).

This module imports only the Lambda code's request contract: ``python -m local_runner``
refuses a bad request without loading moto, boto3's clients or PostgreSQL's driver.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# The last line of every `make run` (make itself exits 2 on any failure).
EXIT_MEANINGS = {
    EXIT_OK: "the run succeeded",
    EXIT_FAILED: "the run failed",
    EXIT_USAGE: "usage error, nothing was run",
}


class UsageError(ValueError):
    """DATA, OUT, STATE or the request cannot be used; the message says why."""


def exit_line(code: int) -> str:
    return f"exit status {code}: {EXIT_MEANINGS.get(code, 'unexpected')}"


def execution_input(args: argparse.Namespace) -> dict[str, Any]:
    """The state machine's input for ``make run RECOMPUTE=... | REPLAY=... | REVALIDATE=...``
    (only the command line's own shape here: :func:`precheck` checks its content)."""
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
        date_from, date_to = _range(args.recompute)
        run_input["recompute"] = {
            "from": date_from,
            "to": date_to,
            "catalogue": args.catalogue or "pinned",
        }
    elif args.replay:
        replay: dict[str, Any] = {"reasons": [r.strip() for r in args.replay.split(",")]}
        if args.dates:
            replay["from"], replay["to"] = _range(args.dates)
        run_input["replay_quarantine"] = replay
    elif revalidate:
        date_from, date_to = _range(revalidate)
        run_input["revalidate"] = {"from": date_from, "to": date_to}
    return run_input


def _range(text: str) -> tuple[str, str]:
    date_from, separator, date_to = text.partition("..")
    if not separator:
        date_from = date_to = text  # one date
    return date_from.strip(), date_to.strip()


def precheck(run_input: dict[str, Any]) -> None:
    """CheckRequest's own check of ``run_input``, with the local environment's
    ``max_recompute_days`` (cdk.json): :class:`UsageError` with CheckRequest's message."""
    from infra.config import load_config
    from kpi_pipeline.errors import InvalidRequest
    from kpi_pipeline.requests import check_request
    from local_runner.template import REPO

    context = json.loads((REPO / "cdk.json").read_text())["context"]
    max_days = load_config(context, "local").max_recompute_days
    try:
        check_request(run_input, max_recompute_days=max_days)
    except InvalidRequest as exc:
        raise UsageError(f"{exc} (CheckRequest would refuse {json.dumps(run_input)})") from None


def start_execution_lines(run_input: dict[str, Any]) -> list[str]:
    """The execution input for the console's "Start execution", and the AWS CLI command."""
    document = json.dumps(run_input)
    return [
        '# the execution input (Step Functions console: "Start execution", Input):',
        document,
        "# the same with the AWS CLI (STATE_MACHINE_ARN: the stack's state machine):",
        'aws stepfunctions start-execution --state-machine-arn "$STATE_MACHINE_ARN" '
        f"--input {shlex.quote(document)}",
    ]
