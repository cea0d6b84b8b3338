-- Daily genre KPIs (docs/kpis.md): one row per (kpi_date, track_genre) with at least one play.
-- A play of a track listed under k genres counts once in each; every value comes from
-- that genre's row of the track, in the catalogue of the play's date.
-- Inputs: int_hourly_track_plays, songs (per catalogue: one row per track and genre).
WITH track_plays AS (
    -- plays per track and date
    SELECT kpi_date, catalogue, track_id, sum(plays) AS plays
    FROM int_hourly_track_plays
    GROUP BY kpi_date, catalogue, track_id
),

genre_tracks AS (
    -- the distinct tracks of a genre played on a date, with their play counts
    SELECT
        plays.kpi_date,
        songs.track_genre,
        songs.track_id,
        songs.track_name,
        songs.popularity,
        songs.duration_ms,
        plays.plays
    FROM track_plays AS plays
    INNER JOIN songs ON plays.catalogue = songs.catalogue AND plays.track_id = songs.track_id
),

genre_totals AS (
    SELECT
        kpi_date,
        track_genre,
        sum(plays) AS listen_count,
        -- P: play-weighted mean popularity of the genre's plays
        sum(plays * popularity) / sum(plays) AS mean_play_popularity,
        -- mean duration over the distinct tracks played, not over plays; the integer
        -- mean first, so the result never depends on the order rows are summed in
        avg(duration_ms) / 1000.0 AS avg_track_duration_sec
    FROM genre_tracks
    GROUP BY kpi_date, track_genre
),

day_leaders AS (
    -- L: the largest listen_count of any genre on the date
    SELECT kpi_date, max(listen_count) AS leading_listen_count
    FROM genre_totals
    GROUP BY kpi_date
),

top_tracks AS (
    -- most plays; ties to the higher popularity, then to the smaller track_id
    SELECT
        kpi_date,
        track_genre,
        arg_min(
            {'track_id': track_id, 'track_name': track_name},
            {'fewer_plays': -plays, 'lower_popularity': -popularity, 'track_id': track_id}
        ) AS track
    FROM genre_tracks
    GROUP BY kpi_date, track_genre
)

SELECT
    totals.kpi_date,
    totals.track_genre,
    totals.listen_count,
    totals.avg_track_duration_sec,
    100 * (
        0.5 * totals.listen_count / leaders.leading_listen_count
        + 0.5 * totals.mean_play_popularity / 100
    ) AS popularity_index,
    top.track.track_name AS most_popular_track,
    top.track.track_id AS most_popular_track_id
FROM genre_totals AS totals
INNER JOIN day_leaders AS leaders ON totals.kpi_date = leaders.kpi_date
INNER JOIN top_tracks AS top
    ON totals.kpi_date = top.kpi_date AND totals.track_genre = top.track_genre
