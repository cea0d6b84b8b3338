-- Hourly KPIs (docs/kpis.md): one row per (kpi_date, stream_hour) with at least one play.
-- Each play counts once here, whatever the number of genres of its track.
-- Inputs: int_hourly_track_plays, int_hourly_listeners, song_artists.
WITH artist_plays AS (
    -- a play credits each of its track's artists once
    SELECT
        plays.kpi_date,
        plays.stream_hour,
        artists.artist,
        sum(plays.plays) AS plays
    FROM int_hourly_track_plays AS plays
    INNER JOIN song_artists AS artists
        ON plays.catalogue = artists.catalogue AND plays.track_id = artists.track_id
    GROUP BY ALL
),

top_artists AS (
    -- most plays; ties to the alphabetically smallest name
    SELECT
        kpi_date,
        stream_hour,
        arg_min(artist, {'fewer_plays': -plays, 'artist': artist}) AS artist
    FROM artist_plays
    GROUP BY kpi_date, stream_hour
),

hours AS (
    SELECT
        kpi_date,
        stream_hour,
        sum(plays) AS listen_count,
        count(*) AS distinct_tracks
    FROM int_hourly_track_plays
    GROUP BY kpi_date, stream_hour
)

SELECT
    hours.kpi_date,
    hours.stream_hour,
    hours.listen_count,
    listeners.unique_listeners,
    top.artist AS top_artists,
    hours.distinct_tracks / hours.listen_count AS track_diversity_index
FROM hours
INNER JOIN int_hourly_listeners AS listeners
    ON hours.kpi_date = listeners.kpi_date AND hours.stream_hour = listeners.stream_hour
LEFT JOIN top_artists AS top
    ON hours.kpi_date = top.kpi_date AND hours.stream_hour = top.stream_hour
