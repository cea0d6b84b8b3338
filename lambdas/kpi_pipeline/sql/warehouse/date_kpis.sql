-- Every KPI of docs/kpis.md for one date, computed inside the warehouse: the same results as
-- staging/, intermediate/ and marts/ (DuckDB), in the SQL that Amazon Redshift and
-- PostgreSQL share: no QUALIFY, DISTINCT ON, unnest, FILTER or GROUP BY ALL, and integers
-- cast before dividing. Strings compare byte by byte (Redshift's default; the local
-- PostgreSQL database uses the C collation).
-- Inputs, temporary tables the engine fills from the date's COPY manifests:
--   wh_curated_plays (user_id, track_id, listen_time: a TIMESTAMP in UTC), every curated
--   object the ledger lists for the date;
--   wh_songs (track_id, track_genre, track_name, popularity, duration_ms), the date's
--   pinned catalogue, one row per track and genre;
--   wh_song_artists (track_id, artist), its artists split and trimmed at extract.
-- Placeholders: {kpi_date} (a DATE literal), {run_id} (a string literal).
-- Output: wh_kpis, in the column order of music_kpi_metrics without loaded_at.

-- Valid plays, each once (docs/kpis.md "Valid plays"), of the date only.
CREATE TEMP TABLE wh_plays AS
SELECT DISTINCT user_id, track_id, listen_time
FROM wh_curated_plays
WHERE CAST(listen_time AS DATE) = {kpi_date};

-- Plays per track and UTC hour: every KPI but unique_listeners is an aggregate of these.
CREATE TEMP TABLE wh_hourly_track_plays AS
SELECT
    CAST(EXTRACT(HOUR FROM listen_time) AS INTEGER) AS stream_hour,
    track_id,
    COUNT(*) AS plays
FROM wh_plays
GROUP BY 1, 2;

-- The distinct tracks of each genre played on the date, with their play counts.
CREATE TEMP TABLE wh_genre_tracks AS
SELECT
    songs.track_genre,
    songs.track_id,
    songs.track_name,
    songs.popularity,
    songs.duration_ms,
    tracks.plays
FROM (
    SELECT track_id, SUM(plays) AS plays
    FROM wh_hourly_track_plays
    GROUP BY track_id
) AS tracks
INNER JOIN wh_songs AS songs ON tracks.track_id = songs.track_id;

CREATE TEMP TABLE wh_genre_totals AS
SELECT
    track_genre,
    SUM(plays) AS listen_count,
    -- P: play-weighted mean popularity of the genre's plays
    CAST(SUM(plays * popularity) AS DOUBLE PRECISION) / SUM(plays) AS mean_play_popularity,
    -- mean duration over the distinct tracks played, not over plays
    CAST(SUM(duration_ms) AS DOUBLE PRECISION) / COUNT(*) / 1000 AS avg_track_duration_sec
FROM wh_genre_tracks
GROUP BY track_genre;

-- most plays; ties to the higher popularity, then to the smaller track_id
CREATE TEMP TABLE wh_top_tracks AS
SELECT track_genre, track_id, track_name
FROM (
    SELECT
        track_genre,
        track_id,
        track_name,
        ROW_NUMBER() OVER (
            PARTITION BY track_genre ORDER BY plays DESC, popularity DESC, track_id ASC
        ) AS place
    FROM wh_genre_tracks
) AS ranked
WHERE place = 1;

-- a play credits each of its track's artists once; most plays, ties to the smallest name
CREATE TEMP TABLE wh_top_artists AS
SELECT stream_hour, artist
FROM (
    SELECT
        stream_hour,
        artist,
        ROW_NUMBER() OVER (PARTITION BY stream_hour ORDER BY plays DESC, artist ASC) AS place
    FROM (
        SELECT hourly.stream_hour, artists.artist, SUM(hourly.plays) AS plays
        FROM wh_hourly_track_plays AS hourly
        INNER JOIN (SELECT DISTINCT track_id, artist FROM wh_song_artists) AS artists
            ON hourly.track_id = artists.track_id
        GROUP BY hourly.stream_hour, artists.artist
    ) AS artist_plays
) AS ranked
WHERE place = 1;

CREATE TEMP TABLE wh_hours AS
SELECT
    counts.stream_hour,
    counts.listen_count,
    counts.distinct_tracks,
    listeners.unique_listeners
FROM (
    SELECT stream_hour, SUM(plays) AS listen_count, COUNT(*) AS distinct_tracks
    FROM wh_hourly_track_plays
    GROUP BY stream_hour
) AS counts
INNER JOIN (
    SELECT
        CAST(EXTRACT(HOUR FROM listen_time) AS INTEGER) AS stream_hour,
        COUNT(DISTINCT user_id) AS unique_listeners
    FROM wh_plays
    GROUP BY 1
) AS listeners ON counts.stream_hour = listeners.stream_hour;

CREATE TEMP TABLE wh_kpis AS
SELECT
    CAST('genre' AS VARCHAR(16)) AS kpi_type,
    {kpi_date} AS kpi_date,
    CAST(totals.track_genre AS VARCHAR(256)) AS track_genre,
    CAST(totals.listen_count AS BIGINT) AS listen_count,
    totals.avg_track_duration_sec,
    100 * (
        0.5 * CAST(totals.listen_count AS DOUBLE PRECISION) / leader.leading_listen_count
        + 0.5 * totals.mean_play_popularity / 100
    ) AS popularity_index,
    CAST(top_track.track_name AS VARCHAR(1024)) AS most_popular_track,
    CAST(top_track.track_id AS VARCHAR(64)) AS most_popular_track_id,
    CAST(NULL AS INTEGER) AS stream_hour,
    CAST(NULL AS INTEGER) AS unique_listeners,
    CAST(NULL AS VARCHAR(1024)) AS top_artists,
    CAST(NULL AS DOUBLE PRECISION) AS track_diversity_index,
    CAST({run_id} AS VARCHAR(128)) AS run_id
FROM wh_genre_totals AS totals
CROSS JOIN (SELECT MAX(listen_count) AS leading_listen_count FROM wh_genre_totals) AS leader
INNER JOIN wh_top_tracks AS top_track ON totals.track_genre = top_track.track_genre

UNION ALL

SELECT
    'hourly',
    {kpi_date},
    NULL,
    CAST(hours.listen_count AS BIGINT),
    NULL,
    NULL,
    NULL,
    NULL,
    hours.stream_hour,
    CAST(hours.unique_listeners AS INTEGER),
    top_artist.artist,
    CAST(hours.distinct_tracks AS DOUBLE PRECISION) / hours.listen_count,
    {run_id}
FROM wh_hours AS hours
LEFT JOIN wh_top_artists AS top_artist ON hours.stream_hour = top_artist.stream_hour;
