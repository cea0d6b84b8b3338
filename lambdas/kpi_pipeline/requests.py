"""CheckRequest: what an execution's input asks for, checked before the run touches anything.

An execution starts with one JSON object. The daily schedule sends ``{"trigger":
"schedule"}``; a person may start:

- ``{"full_extract": true}``: a daily run that reads the source tables whole;
- ``{"recompute": {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD", "catalogue": "pinned" |
  "current"}}``: recompute and replace those dates from every accepted play, each with its
  pinned catalogue, or re-pinned to today's snapshot (after a correction of the songs);
- ``{"replay_quarantine": {"reasons": [...], "from": ..., "to": ...}}``: re-check the
  quarantined rows of those reasons against the snapshot their date is validated with, and
  recompute the dates of the rows that pass now;
- ``{"revalidate": {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}}``: re-check the accepted
  plays of those dates against each date's pin (after a source correction and a recompute
  with ``"catalogue": "current"``), move those that fail now to the quarantine with their
  reason, and recompute their dates (kpi_pipeline.revalidate);
- ``{"preflight": true}``: check, with each step's own role, what the pipeline will need
  (kpi_pipeline.preflight), and keep nothing.

Anything else (an unknown key, a malformed or reversed date, a range longer than
``max_recompute_days``, a reason a re-check can never change) is refused with a message
saying what to fix, before the run takes the lock: a mistyped request never becomes a
daily run.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import PurePosixPath
from typing import Any

from kpi_pipeline.contracts import RunOptions
from kpi_pipeline.errors import InvalidRequest
from kpi_pipeline.layout import Layout, run_key
from kpi_pipeline.reasons import REPLAYABLE_REASONS, RowReason
from kpi_pipeline.storage import Storage

NOTES = ("trigger", "Comment", "comment")  # free text: the schedule's, the console's default
OPERATIONS = ("recompute", "replay_quarantine", "revalidate")  # one per execution
KNOWN_KEYS = ("full_extract", *OPERATIONS, "preflight", *NOTES)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


RUN_ID_BYTES = 128  # music_kpi_metrics.run_id is a VARCHAR(128) (docs/kpis.md): bytes, in Redshift


def check_run_id(run_id: str) -> None:
    """A run's records live under ``runs/<run>/``; ``runs/outcomes/`` holds every run's
    outcome document, so no run may be named ``outcomes``. Its name is every KPI row's
    run_id, at most 128 bytes in UTF-8 (80 characters outside ASCII can be 320)."""
    if len(run_id.encode()) > RUN_ID_BYTES:
        raise InvalidRequest(
            f"an execution name may have at most {RUN_ID_BYTES} bytes in UTF-8 (the KPI "
            f"table's run_id); this one has {len(run_id.encode())}: start it with a shorter "
            "name"
        )
    if run_key(run_id) == PurePosixPath(Layout.outcomes_prefix).name:
        raise InvalidRequest(
            f"an execution may not be named {run_id!r}: its records would mix with every "
            "run's outcome documents (runs/outcomes/); start it with another name"
        )


def check_name_unused(run_id: str, storage: Storage, layout: Layout) -> None:
    """Step Functions takes an execution's name again 90 days after it closed; everything a
    run keeps is keyed by its name (its records, its catalogue copy, its outcome), so a name
    that has records already is refused: a recompute under a reused name would keep the old
    run's catalogue as its own."""
    bucket = layout.data_bucket
    name = run_key(run_id)
    # runs/ expires after 90 days, when the name may come back: the catalogue copy and the
    # archive never do (infra.functions.NAME_KEYED_PREFIXES may list them).
    keyed = (
        f"runs/{name}/",
        f"{Layout.outcomes_prefix}{name}.json",
        layout.catalogue_songs_key(run_id),
        f"archive/run_id={name}/",
    )
    for prefix in keyed:
        if next(iter(storage.list_objects(bucket, prefix)), None) is not None:
            raise InvalidRequest(
                f"an execution named {run_id!r} ran before (s3://{bucket}/{prefix} exists): "
                "start this one with another name (or none: the console and the schedule "
                "make a unique one)"
            )


def check_request(execution_input: Any, *, max_recompute_days: int) -> RunOptions:
    """The run ``execution_input`` asks for; :class:`InvalidRequest` says what is wrong."""
    if execution_input is None:
        execution_input = {}
    if not isinstance(execution_input, dict):
        raise InvalidRequest(
            f"the execution input must be a JSON object, not {_kind(execution_input)}"
        )
    unknown = sorted(set(execution_input) - set(KNOWN_KEYS))
    if unknown:
        raise InvalidRequest(
            f"unknown input key(s) {unknown}: the pipeline accepts {list(KNOWN_KEYS[:5])} "
            "(and a free-text 'trigger' or 'Comment')"
        )
    if "preflight" in execution_input:
        return _preflight(execution_input)
    full_extract = execution_input.get("full_extract", False)
    if not isinstance(full_extract, bool):
        raise InvalidRequest("'full_extract' must be true or false")
    asked = [key for key in OPERATIONS if key in execution_input]
    if len(asked) > 1:
        raise InvalidRequest(
            f"{' and '.join(repr(a) for a in asked)} cannot be asked in one execution: start "
            "one, then the other"
        )
    if not asked:
        return RunOptions()
    if asked[0] == "recompute":
        return _recompute(execution_input["recompute"], max_recompute_days)
    if asked[0] == "revalidate":
        return _revalidate(execution_input["revalidate"], max_recompute_days)
    return _replay(execution_input["replay_quarantine"])


def _preflight(execution_input: dict[str, Any]) -> RunOptions:
    if execution_input["preflight"] is not True:
        raise InvalidRequest("'preflight' must be true (or left out)")
    others = sorted(set(execution_input) - {"preflight", *NOTES})
    if others:
        raise InvalidRequest(f"a preflight touches no data: it takes no {others}")
    return RunOptions(kind="preflight")


def _recompute(options: Any, max_days: int) -> RunOptions:
    fields = _object("recompute", options, required=("from", "to"), optional=("catalogue",))
    date_from, date_to = _range("recompute", fields, max_days)
    catalogue = fields.get("catalogue", "pinned")
    if catalogue not in ("pinned", "current"):
        raise InvalidRequest(
            f"recompute.catalogue must be 'pinned' (each date keeps its catalogue) or "
            f"'current' (re-pin to today's songs), not {catalogue!r}"
        )
    return RunOptions(kind="recompute", date_from=date_from, date_to=date_to, catalogue=catalogue)


def _revalidate(options: Any, max_days: int) -> RunOptions:
    fields = _object("revalidate", options, required=("from", "to"), optional=())
    date_from, date_to = _range("revalidate", fields, max_days)
    return RunOptions(kind="revalidate", date_from=date_from, date_to=date_to)


def _replay(options: Any) -> RunOptions:
    fields = _object("replay_quarantine", options, required=("reasons",), optional=("from", "to"))
    reasons = fields["reasons"]
    if not isinstance(reasons, list) or not reasons or not all(isinstance(r, str) for r in reasons):
        raise InvalidRequest(
            f"replay_quarantine.reasons must be a non-empty list of reasons, e.g. "
            f"{list(REPLAYABLE_REASONS)}"
        )
    wrong = sorted(set(reasons) - set(REPLAYABLE_REASONS))
    if wrong:
        known = {r.value for r in RowReason}
        why = (
            "decided by the row itself, a re-check can never pass it"
            if set(wrong) <= known
            else "not a row quarantine reason"
        )
        raise InvalidRequest(
            f"replay_quarantine.reasons {wrong}: {why}; replayable reasons are "
            f"{list(REPLAYABLE_REASONS)}"
        )
    date_from = _date("replay_quarantine.from", fields["from"]) if "from" in fields else None
    date_to = _date("replay_quarantine.to", fields["to"]) if "to" in fields else None
    if date_from and date_to:
        _check_order("replay_quarantine", date_from, date_to)
    return RunOptions(
        kind="replay_quarantine",
        date_from=date_from,
        date_to=date_to,
        reasons=sorted(set(reasons)),
    )


def _object(
    name: str, options: Any, *, required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise InvalidRequest(f"'{name}' must be an object with {list(required)}")
    missing = [key for key in required if key not in options]
    if missing:
        raise InvalidRequest(f"'{name}' lacks {missing}")
    unknown = sorted(set(options) - set(required) - set(optional))
    if unknown:
        raise InvalidRequest(
            f"'{name}' has unknown key(s) {unknown}; it takes {list(required + optional)}"
        )
    return options


def _range(name: str, fields: dict[str, Any], max_days: int) -> tuple[dt.date, dt.date]:
    date_from = _date(f"{name}.from", fields["from"])
    date_to = _date(f"{name}.to", fields["to"])
    days = _check_order(name, date_from, date_to)
    if days > max_days:
        raise InvalidRequest(
            f"{name} covers {days} days ({date_from} to {date_to}), more than "
            f"max_recompute_days ({max_days}): split it, or raise max_recompute_days in cdk.json"
        )
    return date_from, date_to


def _check_order(name: str, date_from: dt.date, date_to: dt.date) -> int:
    if date_from > date_to:
        raise InvalidRequest(f"{name}.from ({date_from}) is after {name}.to ({date_to})")
    return (date_to - date_from).days + 1


def _date(name: str, value: Any) -> dt.date:
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidRequest(f"{name} must be a date written YYYY-MM-DD, not {value!r}")


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else type(value).__name__
