"""``make bench [PLAYS=2000000] [DAYS=3]``: speed and peak memory of ingest and transform.

Each measurement runs in a fresh child process so its peak resident memory (ru_maxrss) is
its own. Inputs come from the sample-data generator, at a realistic catalogue size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def measure(target: str, *args: Any) -> dict[str, Any]:
    """Run ``target(*args)`` in a fresh interpreter; its time and peak RSS are its own."""
    done = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "benchmarks", "--child", target, json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{target} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _run_child(target: str, args_json: str) -> None:
    sys.path.insert(0, str(REPO / "lambdas"))
    # Import first: the figures are for the work, not for Python's start-up.
    import kpi_pipeline.ingest
    import kpi_pipeline.kpis  # noqa: F401

    started = time.perf_counter()
    result = globals()[target](*json.loads(args_json))
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, **result}))


def ingest_one_file(csv_path: str, users: str, songs: str, work: str) -> dict[str, Any]:
    from kpi_pipeline import engine
    from kpi_pipeline.ingest import AcceptedFile, Lineage, Snapshot, validate_stream_file
    from kpi_pipeline.settings import EngineSettings

    con = engine.connect(EngineSettings(duckdb_memory_limit_mb=1024), Path(work))
    outcome = validate_stream_file(
        Path(csv_path),
        snapshots=Snapshot(Path(users), Path(songs)),
        lineage=Lineage("bench.csv", "0" * 64, "bench"),
        out_dir=Path(work) / "out",
        con=con,
    )
    assert isinstance(outcome, AcceptedFile)
    return {
        "rows": outcome.plays_valid + outcome.duplicates + sum(outcome.rows_quarantined.values())
    }


def transform_days(songs: str, plays: list[str], dates: list[str], work: str) -> dict[str, Any]:
    from kpi_pipeline import engine
    from kpi_pipeline.kpis import run_kpi_models
    from kpi_pipeline.settings import EngineSettings

    con = engine.connect(EngineSettings(duckdb_memory_limit_mb=1024), Path(work))
    con.execute(
        "CREATE TEMP TABLE songs AS SELECT *, 'bench' AS catalogue "
        f"FROM read_parquet({engine.literal(Path(songs))})"
    )
    con.execute(
        f"CREATE TEMP VIEW curated_plays AS SELECT * FROM read_parquet("
        f"{engine.parquet_list([Path(p) for p in plays])})"
    )
    con.execute("CREATE TEMP TABLE target_dates (kpi_date DATE, catalogue VARCHAR)")
    for day in dates:
        con.execute("INSERT INTO target_dates VALUES (?, 'bench')", [dt.date.fromisoformat(day)])
    table = run_kpi_models(con, "bench")
    plays_in = engine.scalar(con, "SELECT count(*) FROM stg_plays")
    return {"rows": plays_in, "kpi_rows": table.num_rows}


def snapshot(users_csv: Path, songs_csv: Path, out: Path) -> tuple[Path, Path]:
    """The cleaned users/songs snapshot Parquet, as ExtractRds writes it."""
    sys.path.insert(0, str(REPO / "lambdas"))
    from kpi_pipeline import engine
    from kpi_pipeline.extract import stage_source_tables
    from kpi_pipeline.settings import EngineSettings

    con = engine.connect(EngineSettings(), out)
    options = "all_varchar = true, quote = '\"', escape = '\"', header = true"
    for table, path in (("users", users_csv), ("songs", songs_csv)):
        con.execute(
            f"CREATE TEMP VIEW raw_{table} AS "
            f"SELECT * FROM read_csv({engine.literal(path)}, {options})"
        )
    stage_source_tables(con)
    users, songs = out / "users.parquet", out / "songs.parquet"
    con.execute(f"COPY stg_users TO {engine.literal(users)} (FORMAT parquet)")
    con.execute(f"COPY stg_songs TO {engine.literal(songs)} (FORMAT parquet)")
    return users, songs


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--child":
        _run_child(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--plays", type=int, default=2_000_000, help="plays per day (one file)")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=100_000)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "lambdas"))
    from local_runner.sample_data import SampleConfig, generate

    root = Path(tempfile.mkdtemp(prefix="music-kpi-bench-"))
    try:
        config = SampleConfig(
            seed=1,
            users=args.users,
            tracks=args.tracks,
            days=args.days,
            plays_per_day=args.plays,
            include_bad_file=False,
        )
        started = time.perf_counter()
        data = generate(root / "data", config)
        print(
            f"generated {args.days} files x {args.plays:,} rows, {args.users:,} users, "
            f"{args.tracks:,} tracks in {time.perf_counter() - started:.1f} s"
        )
        users, songs = snapshot(data.users_csv, data.songs_csv, root)

        print(f"\n{'step':<34}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
        curated: list[str] = []
        for index, stream in enumerate(data.stream_files):
            work = root / f"ingest{index}"
            work.mkdir()
            size_mb = stream.stat().st_size / 1e6
            result = measure("ingest_one_file", str(stream), str(users), str(songs), str(work))
            _row(f"ingest {stream.name} ({size_mb:.0f} MB)", result)
            curated += [str(p) for p in sorted((work / "out").glob("plays_*.parquet"))]

        dates = sorted({Path(p).stem.removeprefix("plays_") for p in curated})
        work = root / "transform"
        work.mkdir()
        result = measure("transform_days", str(songs), curated, dates, str(work))
        _row(f"transform {len(dates)} dates ({result['kpi_rows']} KPI rows)", result)
        print("\nDuckDB memory_limit 1024 MB in each step; peak MB is the child's max RSS.")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _row(label: str, result: dict[str, Any]) -> None:
    rate = result["rows"] / result["seconds"] if result["seconds"] else 0
    print(
        f"{label:<34}{result['rows']:>12,}{result['seconds']:>10.2f}{rate:>12,.0f}"
        f"{result['peak_mb']:>10,.0f}"
    )


if __name__ == "__main__":
    sys.exit(main())
