"""The bench's input: a users table, a songs table and stream files, generated once and kept.

Generating 10 million rows takes longer than ingesting them, so each data set is written
under ``.bench/<name>/`` (git-ignored) and reused while its definition is unchanged. The
files come from the sample-data generator, with its dirt: malformed rows of every
quarantine class, duplicates, late rows and timestamps in several ISO 8601 spellings.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from local_runner.sample_data import SampleConfig, generate, write_stream_file

CACHE = Path(__file__).resolve().parent.parent / ".bench"


@dataclass(frozen=True)
class DataSet:
    """``plays`` stream rows in ``files`` files spread over ``days`` days."""

    name: str
    plays: int
    files: int
    days: int
    users: int = 50_000
    tracks: int = 83_400  # about 100,000 song rows: a track is listed under 1-3 genres
    seed: int = 1

    def day_of(self, file_number: int) -> dt.date:
        return dt.date(2024, 6, 25) + dt.timedelta(days=file_number * self.days // self.files)

    def rows_of(self, file_number: int) -> int:
        return (self.plays * (file_number + 1)) // self.files - (self.plays * file_number) // (
            self.files
        )


DEFAULT = DataSet("10M", plays=10_000_000, files=3, days=2)
BIG = DataSet("100M", plays=100_000_000, files=10, days=5)


@dataclass(frozen=True)
class BenchFiles:
    users_csv: Path
    songs_csv: Path
    streams: list[Path]

    def describe(self, data: DataSet) -> str:
        songs = sum(1 for _ in self.songs_csv.open(encoding="utf-8")) - 1
        size = sum(p.stat().st_size for p in self.streams) / 1e6
        return (
            f"{data.plays:,} plays in {data.files} files ({size:,.0f} MB) over {data.days} days, "
            f"{data.users:,} users, {songs:,} song rows"
        )


def materialise(data: DataSet, cache: Path = CACHE) -> BenchFiles:
    """The data set's files under ``cache``, generated on first use (and whenever its
    definition changes)."""
    folder = cache / data.name
    definition = json.dumps(asdict(data), sort_keys=True)
    stamp = folder / "definition.json"
    files = BenchFiles(
        folder / "users.csv",
        folder / "songs.csv",
        [folder / f"streams{i:02d}.csv" for i in range(data.files)],
    )
    if stamp.exists() and stamp.read_text(encoding="utf-8") == definition:
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = SampleConfig(
        seed=data.seed,
        users=data.users,
        tracks=data.tracks,
        days=1,
        plays_per_day=10,
        include_bad_file=False,
    )
    sample = generate(folder / "sample", config)
    sample.users_csv.rename(files.users_csv)
    sample.songs_csv.rename(files.songs_csv)
    shutil.rmtree(folder / "sample")
    for number, path in enumerate(files.streams):
        write_stream_file(
            path,
            config=config,
            day=data.day_of(number),
            plays=data.rows_of(number),
            seed=number,
        )
    stamp.write_text(definition, encoding="utf-8")
    return files


POISON_BYTES = 200_000_000


WIDE_EXTRA_FIELDS = 50_000


def poison_files(files: BenchFiles) -> dict[str, Path]:
    """Stream files of 200 MB: rows of the first stream file as they are (valid but for the
    generator's dirt); the same rows with one field too many (every row malformed); and with
    50,000 fields too many. IngestFile's peak on the others must stay near the first's."""
    folder = CACHE / "poison"
    paths = {
        "valid rows": folder / "valid_rows.csv",
        "wrong-field rows": folder / "wrong_field_rows.csv",
        f"rows of {WIDE_EXTRA_FIELDS:,} extra fields": folder / "wide_rows.csv",
    }
    stamp = folder / "definition.json"
    definition = json.dumps({"bytes": POISON_BYTES, "from": str(files.streams[0]), "v": 2})
    if stamp.exists() and stamp.read_text(encoding="utf-8") == definition:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with files.streams[0].open("rb") as source:
        header = source.readline()
        rows = source.read().splitlines(keepends=True)
    wide = b",x" * WIDE_EXTRA_FIELDS + b"\n"
    spellings = (
        bytes,
        lambda row: row.rstrip(b"\r\n") + b",x\n",
        lambda row: row.rstrip(b"\r\n") + wide,
    )
    for path, spell in zip(paths.values(), spellings, strict=True):
        with path.open("wb") as out:
            out.write(header)
            written = len(header)
            while written < POISON_BYTES:
                for row in rows:
                    line = spell(row)
                    out.write(line)
                    written += len(line)
                    if written >= POISON_BYTES:
                        break
    stamp.write_text(definition, encoding="utf-8")
    return paths
