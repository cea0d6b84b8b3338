-- Hourly KPIs (KPIS.md): one row per (kpi_date, stream_hour) with at least one play.
-- Each play counts once here, whatever the number of genres of its track.
-- Inputs: stg_plays, songs (per catalogue: one row per track and genre).
WITH track_artists AS (
    -- every artist credited on any row of the track, once per track (and catalogue)
    SELECT DISTINCT
        songs.catalogue,
        songs.track_id,
        strip_ws(credit.artist) AS artist
    FROM songs, unnest(string_split(songs.artists, ';')) AS credit (artist)
    WHERE strip_ws(credit.artist) <> ''
),

artist_plays AS (
    -- a play credits each of its track's artists once
    SELECT
        plays.kpi_date,
        plays.stream_hour,
        artists.artist,
        count(*) AS plays
    FROM stg_plays AS plays
    INNER JOIN track_artists AS artists
        ON plays.catalogue = artists.catalogue AND plays.track_id = artists.track_id
    GROUP BY ALL
),

top_artists AS (
    -- most plays; ties to the alphabetically smallest name
    SELECT kpi_date, stream_hour, artist
    FROM artist_plays
    QUALIFY row_number() OVER (
        PARTITION BY kpi_date, stream_hour ORDER BY plays DESC, artist ASC
    ) = 1
),

hours AS (
    SELECT
        kpi_date,
        stream_hour,
        count(*) AS listen_count,
        count(DISTINCT user_id) AS unique_listeners,
        count(DISTINCT track_id) AS distinct_tracks
    FROM stg_plays
    GROUP BY kpi_date, stream_hour
)

SELECT
    hours.kpi_date,
    hours.stream_hour,
    hours.listen_count,
    hours.unique_listeners,
    top.artist AS top_artists,
    hours.distinct_tracks / hours.listen_count AS track_diversity_index
FROM hours
LEFT JOIN top_artists AS top
    ON hours.kpi_date = top.kpi_date AND hours.stream_hour = top.stream_hour
