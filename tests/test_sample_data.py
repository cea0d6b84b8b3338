"""Tests for the deterministic sample-data generator (local_runner.sample_data)."""

from __future__ import annotations

import collections
import csv
import datetime
import re
from dataclasses import replace
from pathlib import Path

import pytest

from local_runner import sample_data
from local_runner.sample_data import (
    BAD_ROW_CLASSES,
    SONGS_HEADER,
    SampleConfig,
    SampleData,
    generate,
    write_stream_file,
    write_stream_file_with_stats,
)

UTC = datetime.UTC
SMALL = SampleConfig(seed=11, users=60, tracks=150, days=2, plays_per_day=3_000)
# The contract's timestamp grammar; stricter than datetime.fromisoformat, which would
# also take "2024-06-25 10:00".
_TS = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")
_INT = re.compile(r"\s*[+-]?\d+\s*")


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _parse_ts(text: str) -> datetime.datetime | None:
    if not _TS.fullmatch(text):
        return None
    try:
        ts = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _catalogue(data: SampleData) -> tuple[set[int], set[str]]:
    _, users = _read(data.users_csv)
    _, songs = _read(data.songs_csv)
    return {int(r[0]) for r in users}, {r[1] for r in songs}


def _classify(
    path: Path, users: set[int], tracks: set[str]
) -> tuple[collections.Counter[str], list[tuple[list[str], datetime.datetime]]]:
    """Bad-row reasons per the contract, and the valid rows with their UTC instant."""
    header, rows = _read(path)
    assert header[:3] == ["user_id", "track_id", "listen_time"]
    reasons: collections.Counter[str] = collections.Counter()
    valid: list[tuple[list[str], datetime.datetime]] = []
    for row in rows:
        if len(row) != len(header):
            reasons["wrong_field_count"] += 1
            continue
        user, track, stamp = row[0], row[1], row[2]
        instant = _parse_ts(stamp)
        if not _INT.fullmatch(user):
            reasons["user_id_not_integer"] += 1
        elif not track.strip():
            reasons["track_id_empty"] += 1
        elif instant is None:
            reasons["listen_time_unparseable"] += 1
        elif int(user) not in users:
            reasons["unknown_user"] += 1
        elif track.strip() not in tracks:
            reasons["unknown_track"] += 1
        else:
            valid.append((row, instant))
    return reasons, valid


@pytest.fixture(scope="module")
def default_data(tmp_path_factory: pytest.TempPathFactory) -> SampleData:
    return generate(tmp_path_factory.mktemp("default"), SampleConfig())


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> SampleData:
    return generate(tmp_path_factory.mktemp("small"), SMALL)


Classified = dict[Path, tuple[collections.Counter[str], list[tuple[list[str], datetime.datetime]]]]


@pytest.fixture(scope="module")
def default_streams(default_data: SampleData) -> Classified:
    """Each daily file of the default generation, classified once (it is the slow part)."""
    users, tracks = _catalogue(default_data)
    daily = [p for p in default_data.stream_files if p.name != "streams_bad_header.csv"]
    return {path: _classify(path, users, tracks) for path in daily}


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_same_config_gives_byte_identical_files(small_data: SampleData, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", SMALL)
    first = _files(small_data.users_csv.parent)
    assert _files(again.users_csv.parent) == first
    assert set(first) == {
        "users.csv",
        "songs.csv",
        "streams1.csv",
        "streams2.csv",
        "streams_bad_header.csv",
    }
    other = _files(generate(tmp_path / "other", replace(SMALL, seed=12)).users_csv.parent)
    assert all(other[name] != first[name] for name in first)


def test_headers_are_exact(small_data: SampleData) -> None:
    first_line = {p.name: p.read_text().split("\n", 1)[0] for p in small_data.stream_files}
    assert small_data.users_csv.read_text().split("\n", 1)[0] == (
        "user_id,user_name,user_age,user_country,created_at"
    )
    assert small_data.songs_csv.read_text().split("\n", 1)[0] == ",".join(SONGS_HEADER)
    assert ",".join(SONGS_HEADER) == (
        "id,track_id,artists,album_name,track_name,popularity,duration_ms,explicit,"
        "danceability,energy,key,loudness,mode,speechiness,acousticness,instrumentalness,"
        "liveness,valence,tempo,time_signature,track_genre"
    )
    assert first_line == {
        "streams1.csv": "user_id,track_id,listen_time",
        "streams2.csv": "user_id,track_id,listen_time,device",  # extra column, 2nd file
        "streams_bad_header.csv": "user_id,track_id,played_at",
    }


def test_users_are_plausible(default_data: SampleData) -> None:
    _, rows = _read(default_data.users_csv)
    assert [int(r[0]) for r in rows] == list(range(1, 501))
    ages = [int(r[2]) for r in rows]
    assert min(ages) >= 13 and max(ages) <= 80
    assert sorted(ages)[len(ages) // 2] < 35  # skewed young
    assert all(re.fullmatch(r"[A-Z]{2}", r[3]) for r in rows)
    assert collections.Counter(r[3] for r in rows).most_common(1)[0][0] == "US"
    for r in rows:
        created = datetime.datetime.strptime(r[4], "%Y-%m-%d %H:%M:%S")
        assert created.date() < SampleConfig().start_date
    assert any("," in r[1] or '"' in r[1] for r in rows)  # quoting exercised


def test_songs_follow_the_spotify_layout(default_data: SampleData) -> None:
    header, rows = _read(default_data.songs_csv)
    col = {name: i for i, name in enumerate(header)}
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    by_track: dict[str, list[list[str]]] = collections.defaultdict(list)
    for r in rows:
        by_track[r[col["track_id"]]].append(r)
        assert re.fullmatch(r"[0-9A-Za-z]{22}", r[col["track_id"]])
        assert 0 <= int(r[col["popularity"]]) <= 100
        assert 30_000 <= int(r[col["duration_ms"]]) <= 900_000
        assert r[col["explicit"]] in ("True", "False")
        assert 0.0 <= float(r[col["danceability"]]) <= 1.0
        assert 0 <= int(r[col["key"]]) <= 11
    assert len(by_track) == 2000
    assert len({(r[1], r[-1]) for r in rows}) == len(rows)  # (track_id, genre) is a key
    for track_rows in by_track.values():
        assert len({tuple(r[1:-1]) for r in track_rows}) == 1  # only the genre differs
    multi_genre = sum(len(v) > 1 for v in by_track.values()) / len(by_track)
    assert 0.10 <= multi_genre <= 0.20
    assert max(len(v) for v in by_track.values()) == 3
    firsts = [v[0] for v in by_track.values()]
    multi_artist = sum(";" in r[col["artists"]] for r in firsts) / len(firsts)
    assert 0.14 <= multi_artist <= 0.26
    credits = collections.Counter(a for r in firsts for a in r[col["artists"]].split(";"))
    counts = sorted(credits.values())
    assert counts[-1] >= 8 * counts[len(counts) // 2]  # a few very prolific artists
    genres = collections.Counter(r[col["track_genre"]] for r in rows)
    assert len(genres) == 20
    assert genres["pop"] > genres["blues"]
    text = [r[col["artists"]] + r[col["album_name"]] + r[col["track_name"]] for r in rows]
    assert any("," in t for t in text)
    assert any('"' in t for t in text)


def test_every_bad_row_class_is_present(default_streams: Classified) -> None:
    assert len(default_streams) == 3
    for reasons, _ in default_streams.values():
        # 20 000 rows * 0.002 = 40 bad rows, dealt round-robin over the six classes.
        assert reasons == {cls: len(range(k, 40, 6)) for k, cls in enumerate(BAD_ROW_CLASSES)}


def test_valid_plays_reference_known_users_and_tracks(
    default_data: SampleData, default_streams: Classified
) -> None:
    users, _ = _catalogue(default_data)
    config = SampleConfig()
    for i, (path, (_, valid)) in enumerate(default_streams.items()):
        header, rows = _read(path)
        day = config.start_date + datetime.timedelta(days=i)
        for row in rows:
            if len(row) == len(header) and _INT.fullmatch(row[0]) and int(row[0]) not in users:
                assert int(row[0]) >= config.users + 1000  # only the deliberate unknown users
        texts = collections.Counter(tuple(r[:3]) for r, _ in valid)
        assert sum(n - 1 for n in texts.values()) == 100  # 0.5% exact duplicates
        dates = collections.Counter(instant.date() for _, instant in valid)
        assert set(dates) == {day, day - datetime.timedelta(days=1)}
        assert dates[day - datetime.timedelta(days=1)] == 200  # 1% late rows
        assert len(valid) == 20_000 - 40


def test_write_stream_file_matches_its_stats(small_data: SampleData, tmp_path: Path) -> None:
    users, tracks = _catalogue(small_data)
    day = SMALL.start_date + datetime.timedelta(days=SMALL.days)  # the "next day"
    stats = write_stream_file_with_stats(
        tmp_path / "streams3.csv", config=SMALL, day=day, plays=5_000, seed=3, extra_column=True
    )
    reasons, valid = _classify(stats.path, users, tracks)
    assert dict(reasons) == {k: v for k, v in stats.bad.items() if v}
    assert len(valid) == stats.on_day_plays + stats.late_plays + stats.duplicates
    assert stats.rows == 5_000 == len(_read(stats.path)[1])
    late = [r for r, instant in valid if instant.date() < day]
    assert len(late) == stats.late_plays > 0


def test_offset_timestamps_keep_the_intended_utc_day(
    small_data: SampleData, tmp_path: Path
) -> None:
    users, tracks = _catalogue(small_data)
    config = replace(SMALL, late_row_rate=0.0)
    day = datetime.date(2024, 6, 25)
    path = write_stream_file(tmp_path / "s.csv", config=config, day=day, plays=20_000, seed=5)
    _, valid = _classify(path, users, tracks)
    assert {instant.date() for _, instant in valid} == {day}
    offsets = [(r[2], i) for r, i in valid if re.search(r"[+-]\d{2}:\d{2}$", r[2])]
    assert any(not stamp.endswith(("+00:00", "-00:00")) for stamp, _ in offsets)
    # Some wall clocks sit on another date than their UTC instant: the shift was applied.
    assert any(stamp[:10] != instant.date().isoformat() for stamp, instant in offsets)
    spellings = {
        "T": any("T" in r[2] for r, _ in valid),
        "fraction": any("." in r[2] for r, _ in valid),
        "Z": any(r[2].endswith("Z") for r, _ in valid),
    }
    assert all(spellings.values()), spellings
    plain = sum(bool(re.fullmatch(r"\S+ \d\d:\d\d:\d\d", r[2])) for r, _ in valid)
    assert plain / len(valid) > 0.9
    hours = collections.Counter(instant.hour for _, instant in valid)
    assert sum(hours[h] for h in range(2, 7)) * 2 < sum(hours[h] for h in range(18, 23))


def test_bad_header_file_follows_the_flag(small_data: SampleData, tmp_path: Path) -> None:
    names = [p.name for p in small_data.stream_files]
    assert names == ["streams1.csv", "streams2.csv", "streams_bad_header.csv"]
    header, rows = _read(small_data.stream_files[-1])
    assert "listen_time" not in header and rows
    without = generate(tmp_path, replace(SMALL, days=1, include_bad_file=False))
    assert [p.name for p in without.stream_files] == ["streams1.csv"]
    assert not (tmp_path / "streams_bad_header.csv").exists()


def test_write_stream_file_is_reproducible(small_data: SampleData, tmp_path: Path) -> None:
    users, tracks = _catalogue(small_data)
    day = SMALL.start_date
    a = write_stream_file(tmp_path / "a.csv", config=SMALL, day=day, plays=2_000, seed=1)
    b = write_stream_file(tmp_path / "b.csv", config=SMALL, day=day, plays=2_000, seed=1)
    c = write_stream_file(tmp_path / "c.csv", config=SMALL, day=day, plays=2_000, seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    # generate() writes streams{i}.csv with seed=i, so seed 1 reproduces streams1.csv.
    assert a.read_bytes() != small_data.stream_files[0].read_bytes()  # 2 000 vs 3 000 rows
    same = write_stream_file(tmp_path / "d.csv", config=SMALL, day=day, plays=3_000, seed=1)
    assert same.read_bytes() == small_data.stream_files[0].read_bytes()
    _, valid = _classify(c, users, tracks)
    assert valid  # the same catalogue: plays of another seed still resolve


def test_multi_chunk_files_stay_consistent(
    small_data: SampleData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sample_data, "_CHUNK_ROWS", 50)  # split every hour into chunks
    users, tracks = _catalogue(small_data)
    stats = write_stream_file_with_stats(
        tmp_path / "s.csv", config=SMALL, day=SMALL.start_date, plays=4_000, seed=9
    )
    reasons, valid = _classify(stats.path, users, tracks)
    assert dict(reasons) == {k: v for k, v in stats.bad.items() if v}
    assert len(valid) == stats.on_day_plays + stats.late_plays + stats.duplicates
    on_day = [i for _, i in valid if i.date() == SMALL.start_date]
    assert len(on_day) == stats.on_day_plays + stats.duplicates


def test_cli_reports_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), "--seed", "3", "--days", "2", "--plays-per-day", "500"]
    assert sample_data.main([*argv, "--users", "20", "--tracks", "40", "--no-bad-file"]) == 0
    out = capsys.readouterr().out
    assert "users.csv: 20 users" in out
    assert "streams2.csv: 500 rows" in out
    assert not (tmp_path / "streams_bad_header.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "songs.csv",
        "streams1.csv",
        "streams2.csv",
        "users.csv",
    ]
