"""``make bench [BENCH_ARGS=--big]``: the pipeline's speed and memory against what a user
would write instead.

On one data set (default: 10M plays in 3 files over 2 days, 50k users, 100k song rows;
``--big``: 100M plays in 10 files), each step runs in a fresh child process, so its time
and peak resident memory (VmHWM) are its own:

- the competitors, on every file at once: a quick DuckDB script and a quick Polars script
  (typed reads, joins and the seven KPIs; no quarantine, hash or output file), and the
  seed's approach in naive pandas;
- the source snapshot, each file's ingest, and the transform of every date, with the
  DuckDB memory limit each Lambda's default memory size gives it.

It prints each step, the totals, the pipeline's time over each competitor's, and whether
the quick scripts' KPIs are the pipeline's (the bench fails when they are not).
``--save-kpis`` keeps the KPI Parquet and ``--compare-kpis`` compares this run's with a kept
one row by row: a faster version must give the same KPIs. Figures vary from run to run on a
shared machine: compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Lambda's terms, for the cost lines: x86_64 in us-east-1 (the first 6 billion GB-s of a
# month), CPU in proportion to memory (one vCPU at 1,769 MB), at most 15 minutes a call.
LAMBDA_USD_PER_GB_SECOND = 0.0000166667
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Figure:
    label: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_mb: float

    def line(self) -> str:
        rate = f"{self.rows / self.seconds:,.0f}" if self.seconds and self.rows else ""
        return (
            f"{self.label:<40}{self.rows:>13,}{self.seconds:>9.2f}{self.cpu_seconds:>9.2f}"
            f"{rate:>13}{self.peak_mb:>9,.0f}"
        )


HEADER = f"{'step':<40}{'rows':>13}{'seconds':>9}{'CPU s':>9}{'rows/s':>13}{'peak MB':>9}"


def measure(label: str, step: str, *args: Any) -> tuple[Figure, dict[str, Any]]:
    """Run ``benchmarks.steps.<step>(*args)`` in a fresh interpreter."""
    done = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "benchmarks", "--child", step, json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{step} failed:\n{done.stderr[-4000:]}")
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    figure = Figure(
        label, int(result["rows"]), result["seconds"], result["cpu_seconds"], result["peak_mb"]
    )
    print(figure.line(), flush=True)
    return figure, result


def peak_mb() -> float:
    """This process's peak resident memory, in MB: VmHWM, the high-water mark of its own
    address space. ru_maxrss survives fork and exec, so a step started while the bench held
    more (the poison files' rows) reported the bench's memory, not its own."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_child(step: str, args_json: str) -> None:
    sys.path.insert(0, str(REPO / "lambdas"))
    import importlib

    from benchmarks import steps  # imported first: the figures are for the work

    for module in steps.IMPORTS.get(step, ()):
        importlib.import_module(module)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    result = getattr(steps, step)(*json.loads(args_json))
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_mb": peak_mb(), **result}))


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--child":
        _run_child(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--big",
        action="store_true",
        help="100M plays in 10 files, the pipeline only (the competitors hold every play in "
        "memory: pandas some 70 GB, DuckDB unbounded on a shared machine)",
    )
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    parser.add_argument(
        "--save-kpis", type=Path, metavar="PATH", help="keep this run's KPI Parquet at PATH"
    )
    parser.add_argument(
        "--compare-kpis",
        type=Path,
        metavar="PATH",
        help="compare this run's KPI Parquet with the one at PATH, row by row",
    )
    parser.add_argument(
        "--source-only", action="store_true", help="only ExtractRds against the 2M-user source"
    )
    parser.add_argument(
        "--listing-only",
        action="store_true",
        help="only ListNewFiles' memory over a landing prefix of a million objects",
    )
    parser.add_argument(
        "--poison-only",
        action="store_true",
        help="only IngestFile's memory on 200 MB of valid and of wrong-field rows",
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "lambdas"))
    from benchmarks.data import BIG, DEFAULT, materialise

    if args.source_only:
        _source()
        return 0
    if args.listing_only:
        print(HEADER)
        _, listed = measure(
            "ListNewFiles, 1,000,000 landing objects", "list_new_files_million", 1_000_000
        )
        print(
            f"\nlisting: {listed['taken']:,} taken (max_files 1,000), {listed['deferred']:,} "
            f"deferred, {listed['ignored']:,} ignored, {listed['unreadable']:,} archived"
        )
        return 0

    data = BIG if args.big else DEFAULT
    started = time.perf_counter()
    files = materialise(data)
    print(f"data: {files.describe(data)} (ready in {time.perf_counter() - started:.0f} s)\n")
    if args.poison_only:
        _poison(files)
        return 0
    print(HEADER)

    inputs = (str(files.users_csv), str(files.songs_csv), [str(p) for p in files.streams])
    competitors: list[Figure] = []
    quick_kpis: dict[str, Any] = {}
    for label, step, skip in (
        ("DuckDB, quick script (no validation)", "quick_duckdb", args.big),
        ("Polars, quick script (no validation)", "quick_polars", args.big),
        ("pandas, naive (no validation)", "pandas_seed", args.big or args.no_pandas),
    ):
        if not skip:
            figure, result = measure(label, step, *inputs)
            competitors.append(figure)
            if "kpis" in result:
                quick_kpis[label] = result["kpis"]

    root = Path(tempfile.mkdtemp(prefix="music-kpi-bench-"))
    try:
        ours, kpis = _pipeline(files, root)
        equal = _check_quick_scripts(kpis, quick_kpis)
        if args.save_kpis:
            shutil.copyfile(kpis, args.save_kpis)
        if args.compare_kpis:
            equal = _compare_kpis(args.compare_kpis, kpis) and equal
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _summary(ours, competitors)
    _poison(files)
    _source()
    return 0 if equal else 1


def _poison(files: Any) -> None:
    """IngestFile on 200 MB of rows with a field too many (all quarantined as malformed_row)
    against 200 MB of the same rows as they are: the bound is its valid peak plus 20%."""
    from benchmarks.data import POISON_BYTES, poison_files

    paths = poison_files(files)
    root = Path(tempfile.mkdtemp(prefix="music-kpi-bench-poison-"))
    try:
        snapshot_dir = root / "snapshot"
        snapshot_dir.mkdir()
        print(f"\npoison input: {POISON_BYTES / 1e6:,.0f} MB files\n")
        print(HEADER)
        snapshot = (str(files.users_csv), str(files.songs_csv), str(snapshot_dir))
        measure("source snapshot (users + songs)", "snapshot", *snapshot)
        figures = []
        for label, path in paths.items():
            work = root / path.stem
            work.mkdir()
            args = (str(path), str(snapshot_dir), str(work))
            figure, _ = measure(f"ingest, {label}", "ingest", *args)
            figures.append(figure)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    valid, *poison = figures
    print()
    for figure in poison:
        ratio = figure.peak_mb / valid.peak_mb
        verdict = "within" if ratio <= 1.2 else "OVER"
        print(
            f"IngestFile memory on {figure.label.removeprefix('ingest, ')}: {figure.peak_mb:,.0f} "
            f"MB peak, {ratio:.2f}x its {valid.peak_mb:,.0f} MB on valid rows ({verdict} the 1.20x "
            "bound)"
        )


def _source() -> None:
    """ExtractRds against a PostgreSQL of 2M users and 500k songs: whole, and incrementally."""
    from benchmarks.source import CHANGED_EVERY, SONGS, USERS, bench_source

    started = time.perf_counter()
    with bench_source() as dsn:
        print(
            f"\nsource: PostgreSQL with {USERS:,} users and {SONGS:,} song rows (ready in "
            f"{time.perf_counter() - started:.0f} s)\n"
        )
        print(HEADER)
        work = Path(tempfile.mkdtemp(prefix="music-kpi-bench-source-"))
        try:
            full, full_result = measure(
                "source extract, full (both tables)", "source_extract", dsn, "full", str(work)
            )
            incremental, result = measure(
                f"source extract, incremental (1 in {CHANGED_EVERY:,})",
                "source_extract",
                dsn,
                "incremental",
                str(work),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    reads = ", ".join(f"{table} {how}" for table, how in result["by_table"].items())
    print(
        f"\nfull: {(USERS + SONGS) / full.seconds:,.0f} source rows/s, the database busy "
        f"{full_result['source_seconds']:.2f} s (COPY of both tables)\n"
        f"incremental: {result['rows']:,} rows read ({result['changed']:,} changed, "
        f"{result['deleted']:,} deleted; {reads}; songs' key column read whole beside), the "
        "database busy "
        f"{result['source_seconds']:.2f} s; the step {incremental.seconds:.2f} s "
        "(it still cleans and writes the whole snapshot; its peak is the whole process's, "
        "the full read before it included)"
    )


def _pipeline(files: Any, root: Path) -> tuple[list[Figure], Path]:
    """Every step of the pipeline; its figures and the KPI Parquet it wrote."""
    snapshot_dir = root / "snapshot"
    snapshot_dir.mkdir()
    figures = [
        measure(
            "source snapshot (users + songs)",
            "snapshot",
            str(files.users_csv),
            str(files.songs_csv),
            str(snapshot_dir),
        )[0]
    ]
    curated: list[str] = []
    for stream in files.streams:
        work = root / stream.stem
        work.mkdir()
        size_mb = stream.stat().st_size / 1e6
        figure, _ = measure(
            f"ingest {stream.name} ({size_mb:,.0f} MB)",
            "ingest",
            str(stream),
            str(snapshot_dir),
            str(work),
        )
        figures.append(figure)
        curated += [str(p) for p in sorted((work / "out").glob("plays_*.parquet"))]
    work = root / "transform"
    work.mkdir()
    figure, result = measure(
        "transform (every date)", "transform", str(snapshot_dir), curated, str(work)
    )
    figures.append(figure)
    kpis = work / "music_kpi_metrics.parquet"
    print(f"\n{result['kpi_rows']} KPI rows; digest {_digest(kpis)}")
    return figures, kpis


def _digest(kpis: Path) -> str:
    """A digest of the KPI values (not of run ids or the file's bytes): equal digests, equal
    KPIs, so a faster version can be compared with the last one."""
    rows = sorted(json.dumps(row, default=str, sort_keys=True) for row in _kpi_values(kpis))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _kpi_values(kpis: Path) -> list[dict[str, Any]]:
    """The KPI rows of a KPI Parquet, without the run id."""
    import pyarrow.parquet as pq

    return list(pq.read_table(kpis).drop_columns(["run_id"]).to_pylist())


def _check_quick_scripts(kpis: Path, quick_kpis: dict[str, Any]) -> bool:
    """Whether each quick script's KPI rows are the pipeline's (printed): a script that
    computes other numbers does other work, and its time says nothing."""
    from benchmarks.quick import differences, keyed

    ours = keyed(_kpi_values(kpis))
    equal = True
    for label, theirs in quick_kpis.items():
        differ = differences(ours, theirs)
        name = label.split(" (")[0]
        if differ:
            equal = False
            print(f"{name}: KPIs DIFFER from the pipeline's in {len(differ)} rows: {differ[:3]}")
        else:
            print(f"{name}: the pipeline's KPIs, all {len(ours)} rows (every KPI column)")
    return equal


def _compare_kpis(kept: Path, kpis: Path) -> bool:
    """This run's KPI rows against a kept KPI Parquet's, row by row and value by value (run
    ids aside; rows matched whatever their order), printed."""
    from collections import Counter

    def rows(path: Path) -> Counter[str]:
        return Counter(json.dumps(row, default=str, sort_keys=True) for row in _kpi_values(path))

    before, after = rows(kept), rows(kpis)
    only_before, only_after = before - after, after - before
    differ = sum(only_before.values()) + sum(only_after.values())
    print(
        f"KPI Parquet against {kept}: {before.total()} rows kept, {after.total()} now, "
        f"{differ} rows differ"
    )
    for side, only in (("kept", only_before), ("now", only_after)):
        for row in sorted(only)[:3]:
            print(f"  only {side}: {row}")
    return differ == 0


def _summary(ours: list[Figure], competitors: list[Figure]) -> None:
    ingest = [f for f in ours if f.label.startswith("ingest")]
    transform = ours[-1]
    core = sum(f.seconds for f in ingest) + transform.seconds
    total = core + ours[0].seconds
    print(
        f"\npipeline: {total:.1f} s in all, of which ingest {sum(f.seconds for f in ingest):.1f} s "
        f"and transform {transform.seconds:.1f} s; largest step peak "
        f"{max(f.peak_mb for f in ours):,.0f} MB"
    )
    if competitors:
        print(
            f"\n{'the pipeline against':<40}{'seconds':>9}{'peak MB':>9}"
            f"{'ingest+transform':>22}{'with snapshot':>22}"
        )
        for figure in competitors:
            print(
                f"{figure.label:<40}{figure.seconds:>9.2f}{figure.peak_mb:>9,.0f}"
                f"{_ratio(core, figure.seconds):>22}{_ratio(total, figure.seconds):>22}"
            )
        print("(the pipeline's time over theirs: 0.50x is twice as fast, 2.00x twice as slow)")
    print("\nEach step runs in a fresh process with the DuckDB memory limit of its Lambda;")
    print("peak MB is that process's own peak RSS (VmHWM). Compare ratios taken in one run.")
    _lambda_terms({"ingest_file": ingest, "transform": [transform]})


def _ratio(ours: float, theirs: float) -> str:
    return (
        f"{ours / theirs:.2f}x ({theirs / ours:.1f}x faster)"
        if ours < theirs
        else (f"{ours / theirs:.2f}x")
    )


def _lambda_terms(figures: dict[str, list[Figure]]) -> None:
    """Cost per million plays and the largest input one call takes in 15 minutes, at the
    measured speed. A Lambda of M MB has M / 1,769 vCPUs: its time is estimated as the CPU
    seconds measured here divided by that (never less than the time measured here)."""
    from infra.config import DEFAULT_FUNCTIONS

    print(
        f"\nOn Lambda (x86_64, ${LAMBDA_USD_PER_GB_SECOND:.10f} per GB-s, 1 vCPU per "
        f"{LAMBDA_MB_PER_VCPU:,} MB; time = CPU s / vCPUs):"
    )
    print(
        f"{'function':<14}{'memory':>10}{'s per M':>10}{'$ per M':>12}"
        f"{'largest call in 15 min':>25}"
    )
    for function, steps in figures.items():
        memory_mb = DEFAULT_FUNCTIONS[function].memory_mb
        millions = sum(f.rows for f in steps) / 1e6
        vcpus = memory_mb / LAMBDA_MB_PER_VCPU
        seconds = max(sum(f.cpu_seconds for f in steps) / vcpus, sum(f.seconds for f in steps))
        per_million = seconds / millions
        usd = per_million * memory_mb / 1024 * LAMBDA_USD_PER_GB_SECOND
        largest = LAMBDA_TIMEOUT_SECONDS / per_million
        unit = "rows in one file" if function == "ingest_file" else "plays of a date"
        print(
            f"{function:<14}{memory_mb:>7,} MB{per_million:>10.2f}{usd:>12.7f}"
            f"{largest:>9,.0f}M {unit}"
        )


if __name__ == "__main__":
    sys.exit(main())
