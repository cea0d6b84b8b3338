"""The KPI SQL on tiny given/expect tables: the spec's worked example and every rule."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import reference_kpis as reference
from tests.conftest import create_database
from tests.harness import assert_matches_reference
from tests.kpi_sql import kpi_rows, play, song, warehouse_kpi_rows

DAY = "2024-06-25"


@pytest.fixture(scope="module", params=["lambda", "warehouse"])
def kpis(request, tmp_path_factory, postgres):
    """The KPIs of given songs and plays from either engine: DuckDB's models (the lambda
    engine) or the warehouse engine's SQL on PostgreSQL. Every test runs on both, so the two
    implementations of docs/kpis.md cannot drift."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "lambda":
        return lambda songs, plays, dates: kpi_rows(folder, songs, plays, dates)
    dsn = create_database(postgres, "kpis")
    return lambda songs, plays, dates: warehouse_kpi_rows(folder, dsn, songs, plays, dates)


def by_genre(rows: list[dict]) -> dict[str, dict]:
    return {r["track_genre"]: r for r in rows}


def by_hour(rows: list[dict]) -> dict[int, dict]:
    return {r["stream_hour"]: r for r in rows}


def worked_example_songs() -> list[dict]:
    return [
        song("A", "pop", artists="X;Y", popularity=80, duration_ms=180_000, track_name="Song A"),
        song("A", "dance", artists="X;Y", popularity=80, duration_ms=180_000, track_name="Song A"),
        song("B", "pop", artists="Y", popularity=40, duration_ms=240_000, track_name="Song B"),
    ]


def test_worked_example_of_the_spec(kpis):
    # The duplicate (1, B, 10:40) is removed by de-duplication; user 3 never reaches curated.
    plays = [
        play(1, "A", f"{DAY} 10:05:00"),
        play(2, "A", f"{DAY} 10:20:00"),
        play(1, "B", f"{DAY} 10:40:00"),
        play(1, "B", f"{DAY} 10:40:00"),
    ]
    rows = kpis(worked_example_songs(), plays, [DAY])

    genres = by_genre(rows["genre"])
    assert set(genres) == {"pop", "dance"}
    pop, dance = genres["pop"], genres["dance"]
    assert pop["listen_count"] == 3
    assert pop["avg_track_duration_sec"] == pytest.approx(210.0)
    assert pop["popularity_index"] == pytest.approx(100 * (0.5 * 1 + 0.5 * (200 / 3) / 100))
    assert round(pop["popularity_index"], 2) == 83.33
    assert (pop["most_popular_track"], pop["most_popular_track_id"]) == ("Song A", "A")
    assert dance["listen_count"] == 2
    assert dance["avg_track_duration_sec"] == pytest.approx(180.0)
    assert round(dance["popularity_index"], 2) == 73.33

    hours = by_hour(rows["hourly"])
    assert set(hours) == {10}
    assert hours[10]["listen_count"] == 3
    assert hours[10]["unique_listeners"] == 2
    assert hours[10]["top_artists"] == "Y"
    assert hours[10]["track_diversity_index"] == pytest.approx(2 / 3)
    for row in rows["genre"] + rows["hourly"]:
        assert row["kpi_date"] == dt.date(2024, 6, 25)
        assert row["run_id"] == "test-run"


def test_genre_rows_have_no_hourly_columns_and_vice_versa(kpis):
    rows = kpis(worked_example_songs(), [play(1, "A", f"{DAY} 10:05:00")], [DAY])
    for row in rows["genre"]:
        assert row["stream_hour"] is None and row["unique_listeners"] is None
        assert row["top_artists"] is None and row["track_diversity_index"] is None
    for row in rows["hourly"]:
        assert row["track_genre"] is None and row["avg_track_duration_sec"] is None
        assert row["popularity_index"] is None and row["most_popular_track"] is None
        assert row["most_popular_track_id"] is None


def test_average_duration_is_over_distinct_tracks_not_plays(kpis):
    songs = [
        song("A", "rock", duration_ms=100_000),
        song("B", "rock", duration_ms=300_000),
    ]
    plays = [play(u, "A", f"{DAY} 09:0{u}:00") for u in range(1, 6)] + [
        play(1, "B", f"{DAY} 09:30:00")
    ]
    genre = by_genre(kpis(songs, plays, [DAY])["genre"])["rock"]
    assert genre["avg_track_duration_sec"] == pytest.approx(200.0)  # not (5*100+300)/6
    assert genre["listen_count"] == 6


def test_popularity_mean_is_play_weighted_and_leader_is_per_date(kpis):
    songs = [
        song("A", "jazz", popularity=90),
        song("B", "jazz", popularity=30),
        song("C", "pop", popularity=10),
    ]
    plays = [
        play(1, "A", f"{DAY} 08:00:00"),
        play(1, "B", f"{DAY} 08:01:00"),
        play(2, "B", f"{DAY} 08:02:00"),
        play(3, "B", f"{DAY} 08:03:00"),
        # the next day: pop is that day's only (so leading) genre
        play(1, "C", "2024-06-26 08:00:00"),
    ]
    rows = kpis(songs, plays, [DAY, "2024-06-26"])["genre"]
    jazz = next(r for r in rows if r["track_genre"] == "jazz")
    pop = next(r for r in rows if r["track_genre"] == "pop")
    # P = (90 + 30*3) / 4 = 45 ; L = 4 on the 25th
    assert jazz["popularity_index"] == pytest.approx(100 * (0.5 * 4 / 4 + 0.5 * 45 / 100))
    # on the 26th pop leads with 1 play: 100 * (0.5 * 1 + 0.5 * 0.10)
    assert pop["popularity_index"] == pytest.approx(55.0)
    assert pop["kpi_date"] == dt.date(2024, 6, 26)


def test_most_popular_track_ties_go_to_popularity_then_smaller_track_id(kpis):
    songs = [
        song("T2", "folk", popularity=70, track_name="Two"),
        song("T1", "folk", popularity=60, track_name="One"),
        song("T9", "indie", popularity=50, track_name="Nine"),
        song("T10", "indie", popularity=50, track_name="Ten"),
    ]
    plays = [
        play(1, "T1", f"{DAY} 07:00:00"),
        play(1, "T2", f"{DAY} 07:01:00"),
        play(1, "T9", f"{DAY} 07:02:00"),
        play(1, "T10", f"{DAY} 07:03:00"),
    ]
    genres = by_genre(kpis(songs, plays, [DAY])["genre"])
    assert genres["folk"]["most_popular_track_id"] == "T2"  # same plays, higher popularity
    assert genres["folk"]["most_popular_track"] == "Two"
    assert genres["indie"]["most_popular_track_id"] == "T10"  # "T10" < "T9" as strings


def test_more_plays_beat_popularity(kpis):
    songs = [song("A", "soul", popularity=99), song("B", "soul", popularity=1)]
    plays = [
        play(1, "A", f"{DAY} 07:00:00"),
        play(1, "B", f"{DAY} 07:01:00"),
        play(2, "B", f"{DAY} 07:02:00"),
    ]
    assert by_genre(kpis(songs, plays, [DAY])["genre"])["soul"]["most_popular_track_id"] == "B"


def test_multi_genre_track_takes_each_value_from_that_genres_row(kpis):
    songs = [
        song("A", "pop", popularity=80, duration_ms=100_000, track_name="A (pop cut)"),
        song("A", "edm", popularity=20, duration_ms=300_000, track_name="A (edm cut)"),
    ]
    plays = [play(1, "A", f"{DAY} 12:00:00"), play(2, "A", f"{DAY} 12:30:00")]
    rows = kpis(songs, plays, [DAY])
    genres = by_genre(rows["genre"])
    assert genres["pop"]["listen_count"] == genres["edm"]["listen_count"] == 2
    assert genres["pop"]["avg_track_duration_sec"] == pytest.approx(100.0)
    assert genres["edm"]["avg_track_duration_sec"] == pytest.approx(300.0)
    assert genres["pop"]["most_popular_track"] == "A (pop cut)"
    assert genres["edm"]["most_popular_track"] == "A (edm cut)"
    assert genres["pop"]["popularity_index"] == pytest.approx(100 * (0.5 + 0.4))
    assert genres["edm"]["popularity_index"] == pytest.approx(100 * (0.5 + 0.1))
    # hourly counts each play once, whatever the number of genres
    assert by_hour(rows["hourly"])[12]["listen_count"] == 2


def test_artists_split_trimmed_credited_once_per_play_across_rows(kpis):
    songs = [
        song("A", "pop", artists=" Zed ; Amy;Zed"),  # Zed twice on one row: credited once
        song("A", "rock", artists="Bob"),  # another row of A credits Bob too
        song("B", "pop", artists="Amy"),
    ]
    plays = [
        play(1, "A", f"{DAY} 18:00:00"),
        play(2, "A", f"{DAY} 18:10:00"),
        play(3, "B", f"{DAY} 18:20:00"),
    ]
    hour = by_hour(kpis(songs, plays, [DAY])["hourly"])[18]
    # Amy: 3 plays (2 via A, 1 via B); Zed and Bob: 2 each
    assert hour["top_artists"] == "Amy"
    assert hour["listen_count"] == 3


def test_top_artist_tie_goes_to_alphabetically_smallest(kpis):
    songs = [song("A", "pop", artists="bea"), song("B", "pop", artists="Adam")]
    plays = [play(1, "A", f"{DAY} 05:00:00"), play(2, "B", f"{DAY} 05:01:00")]
    assert by_hour(kpis(songs, plays, [DAY])["hourly"])[5]["top_artists"] == "Adam"


def test_hourly_unique_listeners_and_diversity(kpis):
    songs = [song("A", "pop"), song("B", "pop"), song("C", "pop")]
    plays = [
        play(1, "A", f"{DAY} 23:00:00"),
        play(1, "A", f"{DAY} 23:01:00"),
        play(2, "B", f"{DAY} 23:02:00"),
        play(2, "C", f"{DAY} 23:59:59"),
        play(3, "C", "2024-06-26 00:00:00"),  # next date, hour 0
    ]
    rows = kpis(songs, plays, [DAY])
    hours = by_hour(rows["hourly"])
    assert set(hours) == {23}  # the 26th is not a target date
    assert hours[23]["listen_count"] == 4
    assert hours[23]["unique_listeners"] == 2
    assert hours[23]["track_diversity_index"] == pytest.approx(3 / 4)


def test_no_row_for_a_genre_or_hour_without_plays(kpis):
    songs = [song("A", "pop"), song("B", "metal")]
    rows = kpis(songs, [play(1, "A", f"{DAY} 03:00:00")], [DAY])
    assert [r["track_genre"] for r in rows["genre"]] == ["pop"]
    assert [r["stream_hour"] for r in rows["hourly"]] == [3]


def test_the_same_play_in_two_files_counts_once(kpis):
    songs = [song("A", "pop")]
    plays = [play(1, "A", f"{DAY} 03:00:00")] * 3 + [play(1, "A", f"{DAY} 03:00:01")]
    rows = kpis(songs, plays, [DAY])
    assert rows["genre"][0]["listen_count"] == 2
    assert rows["hourly"][0]["listen_count"] == 2


# --- property: the SQL agrees with the independent reference on random small inputs ------------

TRACKS = ["T1", "T2", "T3", "T10", "T9"]
GENRES = ["pop", "rock", "jazz"]
ARTISTS = ["Ana", "bea", "Cleo", "Ana ", " Dee"]


@st.composite
def catalogue_and_plays(draw: st.DrawFn) -> tuple[list[dict], list[dict]]:
    songs = []
    for track in TRACKS:
        for genre in draw(st.sets(st.sampled_from(GENRES), min_size=1, max_size=3)):
            credits = draw(st.lists(st.sampled_from(ARTISTS), min_size=0, max_size=3))
            songs.append(
                song(
                    track,
                    genre,
                    track_name=f"{track} as {genre}",
                    artists=";".join(credits),
                    # few values, so plays, popularity and name ties happen often
                    popularity=draw(st.sampled_from([0, 40, 40, 100])),
                    duration_ms=draw(st.sampled_from([1, 180_000, 240_001])),
                )
            )
    moments = [
        f"{day} {hour:02d}:{minute:02d}:00"
        for day in (DAY, "2024-06-26")
        for hour in (0, 13, 23)
        for minute in (0, 30)
    ]
    plays = draw(
        st.lists(
            st.builds(
                play,
                st.integers(min_value=1, max_value=4),
                st.sampled_from(TRACKS),
                st.sampled_from(moments),
            ),
            min_size=1,
            max_size=40,
        )
    )
    return songs, plays


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(catalogue_and_plays())
def test_kpi_sql_matches_the_reference_on_random_inputs(kpis, inputs):
    songs, plays = inputs
    rows = kpis(songs, plays, [DAY, "2024-06-26"])

    distinct = {reference.Play(p["user_id"], p["track_id"], p["listen_time"]) for p in plays}
    expected = reference.Reference(
        genre_rows=reference.genre_kpis(distinct, songs),
        hourly_rows=reference.hourly_kpis(distinct, songs),
        plays_valid=len(distinct),
        duplicates=len(plays) - len(distinct),
    )

    assert_matches_reference(rows["genre"] + rows["hourly"], expected)
