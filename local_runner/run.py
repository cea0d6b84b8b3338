"""``make run``: the synthesized state machine, end to end, on this machine.

1. Start PostgreSQL (embedded unless ``$RDS_DSN``/``$WAREHOUSE_DSN``) and synthesize the
   CDK app, in parallel.
2. Replace the source tables with DATA's users.csv and songs.csv.
3. Start moto, restore the previous runs' S3 objects from STATE, put DATA's stream files
   under the landing prefix, execute the state machine and follow it.
4. Save S3 back to STATE, export the warehouse table and the run summary to OUT.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kpi_pipeline.warehouse.schema import TABLE_COLUMNS
from local_runner.aws import Execution, LocalAws
from local_runner.databases import (
    Databases,
    count_source_rows,
    dsn_to_secret,
    export_table,
    local_databases,
    replace_source_tables,
    restore_table,
    source_reader,
    warehouse_loads,
)
from local_runner.request import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from local_runner.state import Snapshot, StateFolder, StateInUse
from local_runner.template import LocalPipeline, load_pipeline, synthesize_cached

WAREHOUSE_COLUMNS = [column.name for column in TABLE_COLUMNS]  # the CSV's, in this order
WAREHOUSE_TABLE = "music_kpi_metrics"
PROGRESS_SECONDS = 5.0  # at most one progress line of a Map this often


@dataclass(frozen=True)
class InputData:
    users_csv: Path
    songs_csv: Path
    stream_files: tuple[Path, ...]

    @classmethod
    def from_folder(cls, folder: Path) -> InputData:
        if not folder.is_dir():
            raise UsageError(f"DATA={folder} is not a folder")
        missing = [name for name in ("users.csv", "songs.csv") if not (folder / name).is_file()]
        if missing:
            raise UsageError(f"DATA={folder} lacks {', '.join(missing)}")
        streams = tuple(sorted(folder.glob("streams*.csv")))
        return cls(folder / "users.csv", folder / "songs.csv", streams)


def new_run_id(now: dt.datetime | None = None) -> str:
    moment = now or dt.datetime.now(dt.UTC)
    return f"local-{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def run_local(
    data: Path | None,
    out: Path,
    state: Path,
    *,
    console: TextIO | None = None,
    template: Path | None = None,
    engine: str | None = None,
    changes: dict[str, Any] | None = None,
    run_input: dict[str, Any] | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> int:
    """One local run; ``template`` reuses an already synthesized template (tests);
    ``engine`` sets the environment's ``transform.engine`` (cdk.json's, unless given);
    ``changes`` replace other settings of the local environment (benchmarks);
    ``run_input`` is the execution's input (a recompute or a replay: DATA's stream files
    are not put in landing, the run would not take them); a Distributed Map prints how far
    it is at most once every ``progress_seconds``."""
    if engine is not None:
        changes = {**(changes or {}), "transform": {"engine": engine}}

    stream = console or sys.stdout  # this one: the execution sends stdout to the log

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    folder = StateFolder(state)
    try:
        with folder.in_use():
            return _run_locked(
                data, out, folder, say, template, changes, run_input or {}, progress_seconds
            )
    except StateInUse as exc:
        say(f"error: {exc}")
        return EXIT_USAGE


def _run_locked(
    data: Path | None,
    out: Path,
    folder: StateFolder,
    say: Callable[[str], None],
    template: Path | None,
    changes: dict[str, Any] | None,
    run_input: dict[str, Any],
    progress_seconds: float,
) -> int:
    state = folder.path
    run_id = new_run_id()
    say(f"Music KPI pipeline, local run {run_id}")
    if run_input:
        say(f"  input  {json.dumps(run_input)}")
    inputs = _inputs(data, state, say)
    say(f"  data   {inputs.users_csv.parent} ({len(inputs.stream_files)} stream files)")
    say(f"  state  {state} (warehouse and S3 objects kept between runs)")

    with ThreadPoolExecutor(max_workers=1) as pool:
        synthesis = pool.submit(
            lambda: (template, True) if template else _synthesize(state, changes)
        )
        with local_databases(state) as databases:
            if databases.left_running:
                say("  (the embedded PostgreSQL a killed run left running is reused)")
            _warehouse_in_step(folder.current(), databases.warehouse_dsn, say)
            if databases.source_given:
                # A database the runner did not create is read-only to it.
                source = count_source_rows(databases.source_dsn)
                where = "$RDS_DSN (your own tables, read only; DATA's users and songs unused)"
            else:
                source = replace_source_tables(
                    databases.source_dsn, inputs.users_csv, inputs.songs_csv
                )
                where = "embedded PostgreSQL (DATA's users.csv and songs.csv)"
            say(f"  source {where}: users {source['users']:,} rows, songs {source['songs']:,} rows")
            template_path, cached = synthesis.result()
            pipeline = load_pipeline(template_path)
            how = "unchanged since the last synth" if cached else "just synthesized"
            say(f"  state machine {pipeline.state_machine_name} (cdk synth -c env=local, {how})")
            say(f"  engine {pipeline.transform_engine} (transform.engine: each date's KPIs)")
            execution, alerts, written, checks = _execute(
                pipeline, databases, inputs, folder, run_id, run_input, say, progress_seconds
            )
            rows = export_table(
                databases.warehouse_dsn,
                WAREHOUSE_TABLE,
                WAREHOUSE_COLUMNS,
                out / "music_kpi_metrics.csv",
                for_people=True,
            )

    if "preflight" in run_input:
        return _report_preflight(execution, written, alerts, say, checks)
    summary = run_summary(execution, written)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _report(summary, alerts, rows, out, state, run_id, say)
    for line in checks.lines:
        say(line)
    # files_rejected: files arrived and none gave a play; in AWS it alarms
    failed = summary["status"] in {"failed", "files_rejected"} or not checks.passed
    return EXIT_FAILED if failed else EXIT_OK


def _warehouse_in_step(
    saved: Snapshot | None, warehouse_dsn: str, say: Callable[[str], None]
) -> None:
    """A run that died after its load and before its save left the warehouse ahead of the
    saved ledger: put the table back as it was saved (its dates recompute from there)."""
    if saved is None or not saved.warehouse_csv.is_file():
        return
    if warehouse_loads(warehouse_dsn, WAREHOUSE_TABLE) == saved.warehouse_loads:
        return
    rows = restore_table(warehouse_dsn, WAREHOUSE_TABLE, WAREHOUSE_COLUMNS, saved.warehouse_csv)
    say(
        f"  (the warehouse was ahead of STATE's last save, a run died after its load: "
        f"{rows:,} rows put back as saved)"
    )


def _synthesize(state: Path, changes: dict[str, Any] | None) -> tuple[Path, bool]:
    """The local environment's template, with ``changes`` to its settings (each set of
    changes cached in a folder of its own, so switching back and forth synthesizes once)."""
    if not changes:
        return synthesize_cached(state / "cdk.out")
    name = "-".join(f"{k}={v}" for k, v in _flat(changes).items())
    return synthesize_cached(state / f"cdk.out-{name}", changes=changes)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in sorted(values.items()):
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _inputs(data: Path | None, state: Path, say: Callable[[str], None]) -> InputData:
    if data is not None:
        return InputData.from_folder(data)
    from local_runner.sample_data import generate

    sample = state / "sample-data"
    generated = generate(sample)
    say(f"  (no DATA given: sample data generated in {sample})")
    return InputData(generated.users_csv, generated.songs_csv, generated.stream_files)


def _execute(
    pipeline: LocalPipeline,
    databases: Databases,
    inputs: InputData,
    folder: StateFolder,
    run_id: str,
    run_input: dict[str, Any],
    say: Callable[[str], None],
    progress_seconds: float,
) -> tuple[Execution, list[dict[str, Any]], dict[str, Any] | None, LocalChecks]:
    from kpi_pipeline.layout import Layout, run_key

    state = folder.path
    env = pipeline.environment()
    log_path = state / "logs" / f"{run_id}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        log_path.open("w") as log,
        LocalAws(
            pipeline,
            overrides={"WAREHOUSE_DSN": databases.warehouse_dsn, "WORK_DIR": str(state / "tmp")},
            secrets={env["SOURCE_SECRET_ARN"]: dsn_to_secret(_extract_dsn(databases))},
            log_stream=log,
        ) as local,
    ):
        saved = folder.current()
        restored = local.load_buckets(saved.s3) if saved else 0
        daily = not ({"recompute", "replay_quarantine", "revalidate", "preflight"} & set(run_input))
        streams = list(inputs.stream_files) if daily else []
        keys = local.put_files(env["LANDING_BUCKET"], env["LANDING_PREFIX"], streams)
        say(f"  s3     {restored:,} objects restored, {len(keys)} files put in landing\n")
        layout = Layout(env["DATA_BUCKET"], env["LANDING_BUCKET"], env["LANDING_PREFIX"])
        progress = _Progress(
            say,
            maps=_MapResults(layout, run_id, lambda p: len(_keys(local, layout.data_bucket, p))),
            every_seconds=progress_seconds,
        )
        with contextlib.redirect_stdout(log):  # metrics (EMF) go to the log, as in CloudWatch
            execution = local.run(run_id, run_input, on_event=progress, on_poll=progress.poll)
        alerts = local.alerts()
        document = "preflight" if "preflight" in run_input else "summary"
        written = local.read_json(env["DATA_BUCKET"], f"runs/{run_key(run_id)}/{document}.json")
        if written is None and document == "summary":
            written = _counts_so_far(local, env["DATA_BUCKET"], run_id)
        folder.save(
            local.save_buckets,
            lambda dump: _dump_warehouse(databases.warehouse_dsn, dump),
        )
    return execution, alerts, written, LocalChecks.of(local)


def _counts_so_far(local: LocalAws, bucket: str, run_id: str) -> dict[str, Any] | None:
    """A run that failed before Archive wrote its summary: what its IngestFile results say
    (files, plays and quarantined rows), so that its summary does not show zeros."""
    from kpi_pipeline.archiving import file_counts
    from kpi_pipeline.contracts import IngestResult, RunSummary
    from kpi_pipeline.layout import run_key

    keys = _keys(local, bucket, f"runs/{run_key(run_id)}/ingest/")
    if not keys:
        return None
    results = [IngestResult.model_validate(local.read_json(bucket, key)) for key in keys]
    counts = file_counts(results).model_dump()
    return RunSummary.model_validate({"status": "failed", "run_id": run_id, **counts}).model_dump(
        mode="json"
    )


def _keys(local: LocalAws, bucket: str, prefix: str) -> list[str]:
    pages = local.client("s3").get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in pages.paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]


def _dump_warehouse(dsn: str, dump: Path) -> list[list[str]]:
    export_table(dsn, WAREHOUSE_TABLE, WAREHOUSE_COLUMNS, dump)
    return warehouse_loads(dsn, WAREHOUSE_TABLE)


@dataclass(frozen=True)
class LocalChecks:
    """What the local run enforced that moto does not (see local_runner/iam.py, limits.py)."""

    lines: list[str]
    passed: bool

    @classmethod
    def of(cls, local: LocalAws) -> LocalChecks:
        denied = [str(v) for v in local.iam.violations]
        too_large = local.payloads.describe()
        largest = local.payloads.largest
        from local_runner.redshift.grammar import CHECKED

        lines = [
            f"  AWS limits    {len(local.iam.verified):,} distinct calls allowed by the "
            f"synthesized IAM policies, {len(denied)} denied; largest state payload "
            f"{largest.size if largest else 0:,} bytes of 262,144"
            + (f" ({largest.event} {largest.state} {largest.field})" if largest else ""),
            f"  Redshift      {CHECKED.statements:,} warehouse statements parsed with Redshift's "
            f"grammar ({len(CHECKED.shapes)} distinct), none refused; each step as its own "
            "database user",
        ]
        lines += [f"  DENIED        {v}" for v in denied]
        lines += [f"  TOO LARGE     {p}" for p in too_large]
        return cls(lines, passed=not denied and not too_large)


def run_summary(execution: Execution, written: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run summary: the execution's output, or what failed and why.

    ``written`` is the summary the Archive step wrote, if it got that far (a run that
    fails on a file it could not ingest still loads and archives everything else).
    """
    from kpi_pipeline.contracts import RunSummary

    if execution.status == "SUCCEEDED" and execution.output:
        return RunSummary.model_validate(execution.output).model_dump(mode="json")
    counts = RunSummary.model_validate(written) if written else None
    failed = (counts or RunSummary(status="failed", run_id=execution.run_id)).model_dump(
        mode="json"
    )
    return failed | {
        "status": "failed",
        "execution_status": execution.status,
        "failed_state": execution.failed_state,
        "error": execution.error,
        "cause": execution.cause,
    }


@dataclass(frozen=True)
class _MapResults:
    """Where each Distributed Map item leaves its result: one object per file ingested
    (IngestFile, or the Map's Catch for a file that failed) and per date computed (Transform
    or TransformInWarehouse). The iterations are not in the execution's history."""

    layout: Any  # kpi_pipeline.layout.Layout
    run_id: str
    count: Callable[[str], int]  # objects under a prefix of the data bucket

    def ingested(self) -> int:
        return self.count(self.layout.ingest_results_prefix(self.run_id))

    def computed(self, attempt: str) -> Callable[[], int]:
        # each plan's attempt has its own results/kpi_date=<date>.json (Layout)
        return lambda: self.count(f"{self.layout.transform_prefix(self.run_id, attempt)}results/")


@dataclass
class _Running:
    """A Map in progress: how many items it has, how many are done."""

    name: str
    total: str
    noun: str
    done: Callable[[], int]
    started: float
    checked: float
    shown: int = 0


class _Progress:
    """Prints each top-level state as it finishes, with its duration, and while a
    Distributed Map runs, how many of its items are done (a line when the count changed, at
    most one per ``every_seconds``: plain lines, whatever stdout is)."""

    def __init__(
        self,
        say: Callable[[str], None],
        maps: _MapResults | None = None,
        every_seconds: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._maps = maps
        self._every = every_seconds
        self._clock = clock
        self._entered: dict[str, dt.datetime] = {}
        self._items: dict[str, tuple[int, str]] = {}  # each Map's item count and noun
        self._done: dict[str, Callable[[], int]] = {}  # how to count each Map's done items
        self._running: _Running | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind.endswith("StateExited"):
            self._count_items(event["stateExitedEventDetails"])
        if kind.endswith("StateEntered"):
            name = event["stateEnteredEventDetails"]["name"]
            self._entered.setdefault(name, event["timestamp"])
            if kind == "MapStateEntered":
                self._start(name)
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            if name in {"IngestFile", "Transform"}:  # a Map's child, counted by its Map
                return
            if kind == "MapStateExited":
                self._running = None
            started = self._entered.pop(name, event["timestamp"])
            seconds = (event["timestamp"] - started).total_seconds()
            extra = f" ({self._described(name)})" if kind == "MapStateExited" else ""
            self._say(f"  {name:<24} {seconds:6.2f} s{extra}")
        elif kind == "ExecutionFailed":
            self._say("  execution FAILED")

    def poll(self) -> None:
        """While a Map runs: its done items, when they changed (every ``every_seconds``)."""
        running, now = self._running, self._clock()
        if running is None or now - running.checked < self._every:
            return
        running.checked = now
        try:
            done = running.done()
        except Exception:  # a progress line is never worth failing a run for
            return
        if done != running.shown:
            running.shown = done
            self._say(
                f"  {running.name:<24} {done:,} of {running.total} {running.noun} done "
                f"({now - running.started:.0f} s)"
            )

    def _start(self, name: str) -> None:
        if name in self._items and name in self._done:
            now = self._clock()
            count, noun = self._items[name]
            self._running = _Running(name, f"{count:,}", noun, self._done[name], now, now)

    def _described(self, name: str) -> str:
        count, noun = self._items.get(name, (0, ""))
        return f"{count} {noun}" if name in self._items else "?"

    def _count_items(self, details: dict[str, Any]) -> None:
        output = json.loads(details.get("output") or "{}")
        if details["name"] == "ListNewFiles":
            self._items["IngestStreams"] = (output["manifest"]["file_count"], "files")
            if self._maps:
                self._done["IngestStreams"] = self._maps.ingested
        elif details["name"] == "PlanTransform":
            plan = output["transform"]
            self._items["TransformDates"] = (plan["kpi_date_count"], "dates")
            if self._maps and plan.get("attempt"):
                self._done["TransformDates"] = self._maps.computed(plan["attempt"])


def _report(
    summary: dict[str, Any],
    alerts: list[dict[str, Any]],
    rows: int,
    out: Path,
    state: Path,
    run_id: str,
    say: Callable[[str], None],
) -> None:
    say(f"\nResult: {summary['status']}")
    if summary["status"] == "failed":
        say(f"  failed state  {summary.get('failed_state')}")
        say(f"  error         {summary.get('error')}")
        say(f"  cause         {_cause_message(summary.get('cause'))}")
        for alert in alerts:
            say(f"  alert sent    {alert.get('subject')}")
        if any(summary[k] for k in ("files_processed", "files_quarantined", "files_failed")):
            say("  before it failed:")  # what its IngestFile results say
            _report_files(summary, say)
    else:
        _report_files(summary, say)
        _report_loaded(summary, say)
        for alert in alerts:  # an empty source, files refused or given up
            say(f"  alert sent    {alert.get('subject')}")
    say(f"  warehouse     {out / 'music_kpi_metrics.csv'} ({rows:,} rows)")
    say(f"  summary       {out / 'run_summary.json'}")
    say(f"  logs          {state / 'logs' / (run_id + '.jsonl')}")


def _report_files(s: dict[str, Any], say: Callable[[str], None]) -> None:
    """The files, each rejected one with its reason, the plays and quarantined rows."""
    why = s["files_quarantined_by_reason"] or ""
    failed = f", {s['files_failed']} failed" if s["files_failed"] else ""
    say(
        f"  files         {s['files_processed']} processed, {s['files_already_processed']} "
        f"already processed, {s['files_quarantined']} quarantined {why}{failed}"
    )
    for note in s.get("rejected_files", []):
        detail = f" ({note['detail'][:200]})" if note.get("detail") else ""
        say(f"    rejected    {note['key']}: {note['reason']}{detail}")
    say(f"  plays         {s['plays_valid']:,} valid, {s['duplicates']:,} duplicates")
    quarantined = s["rows_quarantined"]
    say(f"  quarantined   {sum(quarantined.values()):,} rows{_by_reason(quarantined)}")


def _report_loaded(s: dict[str, Any], say: Callable[[str], None]) -> None:
    """What the source gave, what was asked, and what reached the warehouse."""
    for table, read in s.get("source_tables", {}).items():
        say(
            f"  source {table:<6} {read['mode']} extract: {read['rows_read']:,} rows read, "
            f"{read['rows_changed']:,} changed, {read['rows_deleted']:,} deleted"
            + (f", watermark {read['watermark']}" if read.get("watermark") else "")
        )
    _report_request(s, say)
    dates = s["kpi_dates"]
    span = f"{dates[0]} .. {dates[-1]} ({len(dates)})" if dates else "none"
    say(f"  KPI dates     {span}, {s['kpi_rows_loaded']:,} rows loaded")
    in_warehouse = s.get("kpi_dates_in_warehouse", 0)
    say(
        f"  computed by   {len(dates) - in_warehouse} dates in Lambda (DuckDB), "
        f"{in_warehouse} in the warehouse (SQL)"
    )


def _report_preflight(
    execution: Execution,
    report: dict[str, Any] | None,
    alerts: list[dict[str, Any]],
    say: Callable[[str], None],
    checks: LocalChecks,
) -> int:
    """The preflight's checks, one line each, and what to fix where one failed."""
    if report is None:  # it failed before Archive gathered the checks
        say(f"\nResult: preflight failed in {execution.failed_state}: {execution.error}")
        say(f"  cause         {_cause_message(execution.cause)}")
        return EXIT_FAILED
    from infra.preflight import report_lines

    say("")
    for line in report_lines(report):
        say(line)
    for alert in alerts:
        say(f"  alert sent    {alert.get('subject')}")
    say(f"  report        s3://<data bucket>/{report['report_key']}")
    for line in checks.lines:
        say(line)
    passed = report["status"] == "preflight_passed" and checks.passed
    return EXIT_OK if passed else EXIT_FAILED


def _report_request(summary: dict[str, Any], say: Callable[[str], None]) -> None:
    """What a recompute replaced, what a replay accepted, or what a revalidation moved."""
    if recompute := summary.get("recompute"):
        repinned = recompute["repinned"]
        pinned = f", {repinned} pinned to this run's catalogue" if repinned else ""
        if not summary["kpi_dates"]:  # it exits 0: say so plainly
            say(
                f"  recompute     no plays in {recompute['date_from']}..{recompute['date_to']}: "
                f"nothing recomputed ({recompute['dates_without_plays']} dates without an "
                f"accepted play, left as they are{pinned})"
            )
        else:
            say(
                f"  recompute     {recompute['date_from']} .. {recompute['date_to']}, catalogue "
                f"{recompute['catalogue']}: {len(summary['kpi_dates'])} dates replaced, "
                f"{recompute['dates_without_plays']} without an accepted play left as they "
                f"are{pinned}"
            )
    if replay := summary.get("replay"):
        rechecked, accepted = replay["rows_rechecked"], replay["rows_accepted"]
        still = replay["rows_still_quarantined"]
        say(
            f"  replay        {sum(rechecked.values()):,} quarantined rows re-checked"
            f"{_by_reason(rechecked)}; {sum(accepted.values()):,} accepted{_by_reason(accepted)} "
            f"({replay['plays_valid']:,} plays), {sum(still.values()):,} still quarantined"
            f"{_by_reason(still)}; {replay['rows_replayed_before']:,} accepted by an earlier "
            "replay (of these reasons and dates)"
        )
    if revalidation := summary.get("revalidation"):
        moved = revalidation["plays_quarantined"]
        say(
            f"  revalidation  {revalidation['date_from']} .. {revalidation['date_to']}: "
            f"{revalidation['plays_checked']:,} accepted plays re-checked in "
            f"{revalidation['contents_checked']:,} curated objects; {sum(moved.values()):,} "
            f"moved to the quarantine{f' {moved}' if moved else ''} "
            f"({revalidation['kpi_date_count']} dates "
            f"recomputed); {revalidation['plays_quarantined_before']:,} moved by an earlier one"
        )


def _by_reason(counts: dict[str, int]) -> str:
    """`` {'reason': n, ...}`` after a total, nothing when there is none."""
    return f" {counts}" if counts else ""


def _cause_message(cause: object) -> str:
    """The error message of a Lambda error cause (a JSON document), else the cause itself."""
    try:
        return str(json.loads(str(cause)).get("errorMessage", cause))[:1000]
    except (ValueError, AttributeError):
        return str(cause)[:1000]


def _extract_dsn(databases: Databases) -> str:
    """The embedded source as the extract reads RDS: its own role (source_reader); a
    source given as $RDS_DSN, as given."""
    if databases.source_given:
        return databases.source_dsn
    return source_reader(databases.source_dsn)
