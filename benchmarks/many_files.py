"""``make bench-files [FILES=2000]``: one local run of that many small stream files.

Each file is a distinct content (a few dozen plays of the sample's next days), so every one
is really ingested: one child execution of the IngestStreams Distributed Map each. The run
goes through ``make run``'s own code, with ``max_files_per_run`` raised to the number of
files, on a fresh state; its report ends with what the local run checked that moto does
not: the IAM calls allowed and denied, and the largest state payload of the execution, its
Map iterations and child executions (Step Functions refuses any over 256 KiB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from local_runner.run import run_local
from local_runner.sample_data import SampleConfig, generate, write_stream_file

CONFIG = SampleConfig(seed=5, users=200, tracks=500, days=1, plays_per_day=500)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-files", description=__doc__)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--plays-per-file", type=int, default=30)
    parser.add_argument("--folder", type=Path, default=Path(".bench/many-files"))
    args = parser.parse_args(argv)

    data, state, out = (args.folder / name for name in ("data", "state", "out"))
    shutil.rmtree(args.folder, ignore_errors=True)
    sample = generate(data, CONFIG)
    for path in sample.stream_files:
        path.unlink()
    for i in range(args.files):
        day = CONFIG.start_date + dt.timedelta(days=1 + i % 7)
        write_stream_file(
            data / f"streams-{i:05d}.csv",
            config=CONFIG,
            day=day,
            plays=args.plays_per_file,
            seed=1000 + i,
        )
    print(f"{args.files:,} stream files of {args.plays_per_file} plays written to {data}")
    started = time.perf_counter()
    code = run_local(data, out, state, changes={"max_files_per_run": args.files})
    print(f"\n{args.files:,} files: {time.perf_counter() - started:.0f} s end to end")
    return code


if __name__ == "__main__":
    sys.exit(main())
