"""Hand-computed cases for the reference KPI computation, one per rule of docs/kpis.md."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.reference_kpis import (
    Play,
    Reference,
    classify_row,
    compute_reference,
    load_songs,
    load_users,
    parse_listen_time,
)

SONG_COLUMNS = (
    "id",
    "track_id",
    "artists",
    "album_name",
    "track_name",
    "popularity",
    "duration_ms",
    "explicit",
    "danceability",
    "energy",
    "key",
    "loudness",
    "mode",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
    "time_signature",
    "track_genre",
)
STREAM_HEADER = "user_id,track_id,listen_time\n"
DAY = date(2024, 6, 25)


def write_users(tmp_path: Path, ids: Sequence[object] = (1, 2, 3)) -> Path:
    path = tmp_path / "users.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "user_name", "user_age", "user_country", "created_at"])
        for user_id in ids:
            writer.writerow([user_id, f"user {user_id}", 30, "FR", "2024-01-01 00:00:00"])
    return path


def write_songs(tmp_path: Path, songs: Sequence[Mapping[str, object]]) -> Path:
    """Write songs.csv; unspecified columns get plain defaults, ``id`` counts up."""
    path = tmp_path / "songs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SONG_COLUMNS, restval="0")
        writer.writeheader()
        for number, song in enumerate(songs, start=1):
            defaults: dict[str, object] = {
                "id": number,
                "artists": "X",
                "track_name": f"name of {song['track_id']}",
                "popularity": 50,
                "duration_ms": 180000,
                "track_genre": "pop",
            }
            writer.writerow({**defaults, **song})
    return path


def write_streams(tmp_path: Path, files: Mapping[str, str | bytes]) -> list[Path]:
    """Write stream files in the given order; text gets the standard header."""
    paths = []
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(STREAM_HEADER + content, encoding="utf-8", newline="")
        else:
            path.write_bytes(content)
        paths.append(path)
    return paths


def run(
    tmp_path: Path,
    songs: Sequence[Mapping[str, object]],
    files: Mapping[str, str | bytes],
    users: Sequence[object] = (1, 2, 3),
) -> Reference:
    return compute_reference(
        write_users(tmp_path, users), write_songs(tmp_path, songs), write_streams(tmp_path, files)
    )


def genre_row(reference: Reference, genre: str, kpi_date: date = DAY) -> dict[str, object]:
    (row,) = [
        row
        for row in reference.genre_rows
        if row["track_genre"] == genre and row["kpi_date"] == kpi_date
    ]
    return row


def hourly_row(reference: Reference, hour: int, kpi_date: date = DAY) -> dict[str, object]:
    (row,) = [
        row
        for row in reference.hourly_rows
        if row["stream_hour"] == hour and row["kpi_date"] == kpi_date
    ]
    return row


# --- the spec's worked example ------------------------------------------------------

WORKED_SONGS = [
    {"track_id": "A", "track_genre": "pop", "artists": "X;Y", "popularity": 80},
    {"track_id": "A", "track_genre": "dance", "artists": "X;Y", "popularity": 80},
    {
        "track_id": "B",
        "track_genre": "pop",
        "artists": "Y",
        "popularity": 40,
        "duration_ms": 240000,
    },
]
WORKED_PLAYS = (
    "1,A,2024-06-25 10:05:00\n"
    "2,A,2024-06-25 10:20:00\n"
    "1,B,2024-06-25 10:40:00\n"
    "1,B,2024-06-25 10:40:00\n"
    "3,B,2024-06-25 11:00:00\n"
)


def test_worked_example(tmp_path: Path) -> None:
    reference = run(tmp_path, WORKED_SONGS, {"plays.csv": WORKED_PLAYS}, users=(1, 2))

    assert reference.genre_rows == [
        {
            "kpi_date": DAY,
            "track_genre": "dance",
            "listen_count": 2,
            "avg_track_duration_sec": 180.0,
            "popularity_index": pytest.approx(100 * (0.5 * 2 / 3 + 0.4)),
            "most_popular_track": "name of A",
            "most_popular_track_id": "A",
        },
        {
            "kpi_date": DAY,
            "track_genre": "pop",
            "listen_count": 3,
            "avg_track_duration_sec": 210.0,
            "popularity_index": pytest.approx(100 * (0.5 + 0.5 * 200 / 300)),
            "most_popular_track": "name of A",
            "most_popular_track_id": "A",
        },
    ]
    assert reference.hourly_rows == [
        {
            "kpi_date": DAY,
            "stream_hour": 10,
            "listen_count": 3,
            "unique_listeners": 2,
            "top_artists": "Y",
            "track_diversity_index": pytest.approx(2 / 3),
        }
    ]
    assert reference.plays_valid == 3
    assert reference.duplicates == 1
    assert reference.rows_quarantined == {"unknown_user_id": 1}
    assert reference.files_quarantined == {}
    assert reference.files_already_processed == []


# --- genre KPIs ---------------------------------------------------------------------


def test_most_popular_track_prefers_more_plays_over_popularity(tmp_path: Path) -> None:
    songs = [{"track_id": "LOW", "popularity": 10}, {"track_id": "HIGH", "popularity": 90}]
    plays = "1,LOW,2024-06-25 10:00:00\n2,LOW,2024-06-25 10:00:00\n1,HIGH,2024-06-25 10:00:00\n"
    assert genre_row(run(tmp_path, songs, {"s.csv": plays}), "pop")["most_popular_track_id"] == (
        "LOW"
    )


def test_most_popular_track_tie_goes_to_that_genres_popularity(tmp_path: Path) -> None:
    # Track P is popular as pop but not as rock; Q the other way round.
    songs = [
        {"track_id": "P", "track_genre": "pop", "popularity": 90},
        {"track_id": "P", "track_genre": "rock", "popularity": 10},
        {"track_id": "Q", "track_genre": "pop", "popularity": 20},
        {"track_id": "Q", "track_genre": "rock", "popularity": 80, "track_name": "Q as rock"},
    ]
    plays = "1,P,2024-06-25 10:00:00\n1,Q,2024-06-25 10:00:00\n"
    reference = run(tmp_path, songs, {"s.csv": plays})
    assert genre_row(reference, "pop")["most_popular_track_id"] == "P"
    assert genre_row(reference, "rock")["most_popular_track_id"] == "Q"
    # The name is that genre's row's name too.
    assert genre_row(reference, "rock")["most_popular_track"] == "Q as rock"


def test_most_popular_track_last_tie_goes_to_the_smaller_track_id(tmp_path: Path) -> None:
    # Plain string comparison: upper case sorts before lower case, "T10" before "T9".
    songs = [{"track_id": "b"}, {"track_id": "T9"}, {"track_id": "T10"}]
    plays = "1,b,2024-06-25 10:00:00\n1,T9,2024-06-25 10:00:00\n1,T10,2024-06-25 10:00:00\n"
    assert genre_row(run(tmp_path, songs, {"s.csv": plays}), "pop")["most_popular_track_id"] == (
        "T10"
    )


def test_multi_genre_track_counts_in_each_genre_with_that_genres_values(tmp_path: Path) -> None:
    songs = [
        {"track_id": "A", "track_genre": "pop", "popularity": 60, "duration_ms": 100000},
        {"track_id": "A", "track_genre": "rock", "popularity": 20, "duration_ms": 300000},
        {"track_id": "B", "track_genre": "rock", "popularity": 40, "duration_ms": 200500},
    ]
    plays = "1,A,2024-06-25 10:00:00\n2,A,2024-06-25 10:30:00\n1,B,2024-06-25 11:00:00\n"
    reference = run(tmp_path, songs, {"s.csv": plays})

    pop, rock = genre_row(reference, "pop"), genre_row(reference, "rock")
    assert (pop["listen_count"], rock["listen_count"]) == (2, 3)  # L = 3
    assert pop["avg_track_duration_sec"] == 100.0
    assert rock["avg_track_duration_sec"] == pytest.approx((300.0 + 200.5) / 2)
    # pop: P = 60; rock: P = (20 + 20 + 40) / 3.
    assert pop["popularity_index"] == pytest.approx(100 * (0.5 * 2 / 3 + 0.5 * 0.6))
    assert rock["popularity_index"] == pytest.approx(100 * (0.5 + 0.5 * 80 / 300))
    # Hourly counts each play once whatever its genres.
    assert [row["listen_count"] for row in reference.hourly_rows] == [2, 1]


def test_popularity_index_uses_each_dates_own_leader(tmp_path: Path) -> None:
    songs = [{"track_id": "A", "popularity": 100}]
    plays = "1,A,2024-06-25 10:00:00\n2,A,2024-06-25 10:00:00\n1,A,2024-06-26 10:00:00\n"
    reference = run(tmp_path, songs, {"s.csv": plays})
    assert genre_row(reference, "pop", DAY)["popularity_index"] == 100.0
    assert genre_row(reference, "pop", date(2024, 6, 26))["popularity_index"] == 100.0


# --- hourly KPIs --------------------------------------------------------------------


def test_artists_are_the_union_over_rows_credited_once_per_play(tmp_path: Path) -> None:
    songs = [
        # X is named twice on A's pop row, with blank names: still one credit a play.
        {"track_id": "A", "track_genre": "pop", "artists": " X ; X ;; "},
        {"track_id": "A", "track_genre": "rock", "artists": "Z"},
        {"track_id": "B", "artists": "Y"},
        {"track_id": "C", "artists": "Z"},
    ]
    plays = (
        # Hour 10: Y 2, X 1, Z 1 (crediting X per mention would tie it with Y and win).
        "1,A,2024-06-25 10:00:00\n1,B,2024-06-25 10:01:00\n2,B,2024-06-25 10:02:00\n"
        # Hour 11: Z 3 (twice through A's rock row), X 2.
        "1,A,2024-06-25 11:00:00\n2,A,2024-06-25 11:00:00\n1,C,2024-06-25 11:00:00\n"
        # Hour 12: X 2 (through A's pop row), Z 2, Y 1: the tie goes to X.
        "1,A,2024-06-25 12:00:00\n2,A,2024-06-25 12:00:00\n1,B,2024-06-25 12:00:00\n"
    )
    reference = run(tmp_path, songs, {"s.csv": plays})
    assert [row["top_artists"] for row in reference.hourly_rows] == ["Y", "Z", "X"]


def test_top_artist_is_none_when_no_play_credits_an_artist(tmp_path: Path) -> None:
    reference = run(
        tmp_path, [{"track_id": "A", "artists": " ; "}], {"s.csv": "1,A,2024-06-25 10:00:00\n"}
    )
    assert reference.hourly_rows[0]["top_artists"] is None


def test_top_artist_tie_goes_to_the_smallest_name(tmp_path: Path) -> None:
    # Plain string comparison: "Zoe" sorts before "alice".
    songs = [{"track_id": "A", "artists": "alice;Zoe"}, {"track_id": "B", "artists": "bob"}]
    plays = "1,A,2024-06-25 10:00:00\n1,B,2024-06-25 10:00:00\n"
    assert run(tmp_path, songs, {"s.csv": plays}).hourly_rows[0]["top_artists"] == "Zoe"


def test_hourly_counts_listeners_and_diversity(tmp_path: Path) -> None:
    songs = [{"track_id": "A"}, {"track_id": "B"}]
    plays = (
        "1,A,2024-06-25 10:00:00\n1,A,2024-06-25 10:10:00\n"
        "2,B,2024-06-25 10:20:00\n1,B,2024-06-25 10:59:59.999999\n"
        "3,A,2024-06-25 11:00:00\n"
    )
    reference = run(tmp_path, songs, {"s.csv": plays})
    assert [
        (row["stream_hour"], row["listen_count"], row["unique_listeners"])
        for row in reference.hourly_rows
    ] == [(10, 4, 2), (11, 1, 1)]
    assert hourly_row(reference, 10)["track_diversity_index"] == 0.5
    assert hourly_row(reference, 11)["track_diversity_index"] == 1.0


def test_offsets_move_plays_across_midnight(tmp_path: Path) -> None:
    songs = [{"track_id": "A"}]
    plays = (
        "1,A,2024-06-25T23:30:00-01:00\n"  # 2024-06-26 00:30 UTC
        "2,A,2024-06-26 01:15:00+02:00\n"  # 2024-06-25 23:15 UTC
        "3,A,2024-06-25 23:45:00Z\n"
    )
    reference = run(tmp_path, songs, {"s.csv": plays})
    assert [(row["kpi_date"], row["listen_count"]) for row in reference.genre_rows] == [
        (DAY, 2),
        (date(2024, 6, 26), 1),
    ]
    assert [(row["kpi_date"], row["stream_hour"]) for row in reference.hourly_rows] == [
        (DAY, 23),
        (date(2024, 6, 26), 0),
    ]


# --- listen_time --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-25 10:05:00", datetime(2024, 6, 25, 10, 5, tzinfo=UTC)),
        (" 2024-06-25T10:05:00 ", datetime(2024, 6, 25, 10, 5, tzinfo=UTC)),
        ("2024-06-25t10:05:00z", datetime(2024, 6, 25, 10, 5, tzinfo=UTC)),
        ("2024-06-25 10:05:00.5", datetime(2024, 6, 25, 10, 5, 0, 500000, tzinfo=UTC)),
        ("2024-06-25 10:05:00.000001Z", datetime(2024, 6, 25, 10, 5, 0, 1, tzinfo=UTC)),
        ("2024-06-25 10:05:00+02:00", datetime(2024, 6, 25, 8, 5, tzinfo=UTC)),
        ("2024-06-25 10:05:00+0530", datetime(2024, 6, 25, 4, 35, tzinfo=UTC)),
        ("2024-06-25 10:05:00-03", datetime(2024, 6, 25, 13, 5, tzinfo=UTC)),
        ("2024-02-29 23:59:59-23:59", datetime(2024, 3, 1, 23, 58, 59, tzinfo=UTC)),
    ],
)
def test_parse_listen_time_accepts(text: str, expected: datetime) -> None:
    parsed = parse_listen_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-06-25",
        "2024-06-25 10:05",
        "2024-06-25_10:05:00",
        "2024/06/25 10:05:00",
        "24-06-25 10:05:00",
        "2024-6-25 10:05:00",
        "2024-06-25 10:05:00.",
        "2024-06-25 10:05:00.1234567",
        "2024-06-25 10:05:00 +02:00",
        "2024-06-25 10:05:00+2",
        "2024-06-25 10:05:00+02:",
        "2024-06-25 10:05:00UTC",
        "2024-06-25 24:00:00",
        "2024-06-25 10:60:00",
        "2024-06-25 10:05:60",
        "2023-02-29 10:05:00",
        "2024-13-01 10:05:00",
        "0000-01-01 10:05:00",
        "2024-06-25 10:05:00+24:00",
        "2024-06-25 10:05:00+01:60",
        "9999-12-31 23:00:00-02:00",  # its UTC instant is in year 10000
        "\uff12\uff10\uff12\uff14-06-25 10:05:00",  # full-width digits
    ],
)
def test_parse_listen_time_rejects(text: str) -> None:
    assert parse_listen_time(text) is None


# --- row reasons --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (["1", "A"], "malformed_row"),
        (["1", "A", "2024-06-25 10:00:00", "extra"], "malformed_row"),
        (["x", "", "never"], "invalid_user_id"),  # first failing check wins
        (["1.0", "A", "2024-06-25 10:00:00"], "invalid_user_id"),
        (["\u0661", "A", "2024-06-25 10:00:00"], "invalid_user_id"),  # Arabic-Indic digit one
        (["", "A", "2024-06-25 10:00:00"], "invalid_user_id"),
        (["1", "  ", "never"], "missing_track_id"),
        (["9", "A", "never"], "invalid_listen_time"),
        (["9", "NOPE", "2024-06-25 10:00:00"], "unknown_user_id"),
        (["1", "NOPE", "2024-06-25 10:00:00"], "unknown_track_id"),
        (["1", "a", "2024-06-25 10:00:00"], "unknown_track_id"),  # ids are case-sensitive
    ],
)
def test_classify_row_reasons(record: list[str], expected: str) -> None:
    header = ["user_id", "track_id", "listen_time"]
    assert classify_row(record, header, {1}, {"A"}) == expected


def test_classify_row_normalizes_the_play() -> None:
    header = ["listen_time", "extra", "track_id", "user_id"]
    record = ["2024-06-25 12:00:00+02:00", "ignored", " A ", " +01 "]
    assert classify_row(record, header, {1}, {"A"}) == Play(
        1, "A", datetime(2024, 6, 25, 10, tzinfo=UTC)
    )


def test_row_reasons_and_duplicates_are_counted_per_file(tmp_path: Path) -> None:
    songs = [{"track_id": "A"}]
    plays = (
        "1,A,2024-06-25 10:00:00\n"
        "\n"  # a blank line is no record at all
        " 1 ,A ,2024-06-25T11:00:00+01:00\n"  # the same play written differently
        "1,A\n"
        "one,A,2024-06-25 10:00:00\n"
        "1,,2024-06-25 10:00:00\n"
        "1,A,yesterday\n"
        "7,A,2024-06-25 10:00:00\n"
        "1,Z,2024-06-25 10:00:00\n"
        "2,A,2024-06-25 10:00:00\n"
    )
    reference = run(tmp_path, songs, {"s.csv": plays})
    assert reference.rows_quarantined == {
        "malformed_row": 1,
        "invalid_user_id": 1,
        "missing_track_id": 1,
        "invalid_listen_time": 1,
        "unknown_user_id": 1,
        "unknown_track_id": 1,
    }
    assert (reference.plays_valid, reference.duplicates) == (2, 1)


# --- file reasons and identical files ----------------------------------------------


def test_file_reasons(tmp_path: Path) -> None:
    songs = [{"track_id": "A"}]
    bad_row = "9,A,2024-06-25 10:00:00\n"  # would be a quarantined row if read
    reference = run(
        tmp_path,
        songs,
        {
            "latin1.csv": (STREAM_HEADER + "1,A,2024-06-25 10:00:00,café\n").encode("latin-1"),
            "empty.csv": b"",
            "blank.csv": b" \r\n\n\t\n",
            "quote.csv": (STREAM_HEADER + bad_row + '1,"A,2024-06-25 10:00:00\n').encode(),
            # text right after a closing quote: no reader can say where the field ends
            "junk_after_quote.csv": (STREAM_HEADER + bad_row + '1,"A"x,t\n').encode(),
            "no_time.csv": ("user_id,track_id,when\n" + bad_row).encode(),
            "no_header.csv": bad_row.encode(),
            "twice.csv": ("user_id,track_id,listen_time, User_ID \n" + bad_row + "1").encode(),
        },
    )
    assert reference.files_quarantined == {
        "latin1.csv": "not_utf8",
        "empty.csv": "empty_file",
        "blank.csv": "empty_file",
        "quote.csv": "unreadable_csv",
        "junk_after_quote.csv": "unreadable_csv",
        "no_time.csv": "missing_columns",
        "no_header.csv": "missing_columns",
        "twice.csv": "ambiguous_columns",
    }
    assert reference.rows_quarantined == {}
    assert (reference.plays_valid, reference.duplicates) == (0, 0)
    assert reference.genre_rows == reference.hourly_rows == []


def test_file_accepted_with_bom_odd_header_and_extra_columns(tmp_path: Path) -> None:
    content = (
        "\ufeff\n Listen_Time ,device,TRACK_ID,user_id,user_id_hash\r\n"
        '"2024-06-25 10:00:00",phone,A,1,"x,y"\r\n'
        "2024-06-25 10:00:00,phone,A,1,zz\r\n"
    ).encode()
    reference = run(tmp_path, [{"track_id": "A"}], {"bom.csv": content})
    assert reference.files_quarantined == {}
    assert (reference.plays_valid, reference.duplicates) == (1, 1)
    assert reference.genre_rows[0]["listen_count"] == 1


def test_header_only_file_is_accepted_with_no_plays(tmp_path: Path) -> None:
    reference = run(tmp_path, [{"track_id": "A"}], {"header.csv": ""})
    assert reference.files_quarantined == {}
    assert (reference.plays_valid, reference.genre_rows) == (0, [])


def test_identical_files_are_processed_once_and_plays_are_distinct_across_files(
    tmp_path: Path,
) -> None:
    songs = [{"track_id": "A"}]
    first = "1,A,2024-06-25 10:00:00\n2,A,2024-06-25 10:00:00\n9,A,2024-06-25 10:00:00\n"
    # Different bytes, one play in common with the first file.
    overlapping = "2,A,2024-06-25T10:00:00Z\n3,A,2024-06-25 10:00:00\n"
    reference = run(
        tmp_path,
        songs,
        {
            "day.csv": first,
            "copy_of_day.csv": first,
            "overlap.csv": overlapping,
            "bad.csv": b"user_id\n1\n",
            "copy_of_bad.csv": b"user_id\n1\n",  # a copy of a quarantined file too
        },
    )
    # A bad file is quarantined each time it comes; only accepted content is "processed".
    assert reference.files_already_processed == ["copy_of_day.csv"]
    assert reference.files_quarantined == {
        "bad.csv": "missing_columns",
        "copy_of_bad.csv": "missing_columns",
    }
    assert reference.plays_valid == 2 + 2  # per file
    assert reference.duplicates == 0  # duplicates are within a file only
    assert reference.rows_quarantined == {"unknown_user_id": 1}
    assert genre_row(reference, "pop")["listen_count"] == 3  # users 1, 2 and 3
    assert hourly_row(reference, 10)["unique_listeners"] == 3


# --- songs and users ----------------------------------------------------------------


def test_load_songs_cleans_and_deduplicates(tmp_path: Path) -> None:
    path = write_songs(
        tmp_path,
        [
            {"id": 10, "track_id": " A ", "track_genre": " pop ", "track_name": "ten"},
            {"id": 9, "track_id": "A", "track_genre": "pop", "track_name": "nine"},
            {"id": 11, "track_id": "A", "track_genre": "Pop", "popularity": " 100 "},
            {"track_id": "  ", "track_genre": "pop"},
            {"track_id": "B", "track_genre": " "},
            {"track_id": "C", "popularity": ""},
            {"track_id": "C", "popularity": "101", "track_genre": "c1"},
            {"track_id": "C", "popularity": "-1", "track_genre": "c2"},
            {"track_id": "C", "popularity": "50.0", "track_genre": "c3"},
            {"track_id": "D", "duration_ms": ""},
            {"track_id": "D", "duration_ms": "-1", "track_genre": "d1"},
            {"track_id": "D", "duration_ms": "1.5", "track_genre": "d2"},
            {"track_id": "E", "popularity": 0, "duration_ms": 0},
        ],
    )
    songs = load_songs(path)
    assert [(s["track_id"], s["track_genre"], s["track_name"]) for s in songs] == [
        ("A", "pop", "nine"),  # the smallest integer id wins, not the first row
        ("A", "Pop", "name of A"),
        ("E", "pop", "name of E"),
    ]
    assert (songs[1]["popularity"], songs[2]["duration_ms"]) == (100, 0)


def test_a_track_with_only_dirty_rows_does_not_exist(tmp_path: Path) -> None:
    songs = [{"track_id": "A"}, {"track_id": "D", "duration_ms": "-1"}]
    plays = "1,A,2024-06-25 10:00:00\n1,D,2024-06-25 10:00:00\n"
    reference = run(tmp_path, songs, {"s.csv": plays})
    assert reference.rows_quarantined == {"unknown_track_id": 1}


def test_the_dropped_duplicate_songs_row_gives_no_values(tmp_path: Path) -> None:
    # id 1 is kept for (A, pop); row id 2's values (popularity, artist) are not used.
    songs = [
        {"id": 2, "track_id": "A", "popularity": 10, "artists": "Ghost"},
        {"id": 1, "track_id": "A", "popularity": 70, "artists": "Real"},
    ]
    reference = run(tmp_path, songs, {"s.csv": "1,A,2024-06-25 10:00:00\n"})
    assert genre_row(reference, "pop")["popularity_index"] == pytest.approx(100 * (0.5 + 0.35))
    assert reference.hourly_rows[0]["top_artists"] == "Real"


def test_load_users(tmp_path: Path) -> None:
    assert load_users(write_users(tmp_path, [1, " 2 ", -3, "x", ""])) == {1, 2, -3}
