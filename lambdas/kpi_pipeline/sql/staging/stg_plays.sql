-- The valid plays of one date, each once: the same play delivered in two files (or twice
-- in one) is one play (docs/kpis.md "Valid plays"). A play's time fixes its date, so no
-- duplicate spans two dates: computing a date at a time gives the same plays and holds
-- one date's plays in memory, never a whole backlog's. A play is keyed by its track's
-- number (stg_play_tracks.sql): the same track_id, the same number.
-- Inputs: curated_plays (the curated Parquet of the date), stg_play_tracks, kpi_day(kpi_date).
WITH plays AS (
    SELECT DISTINCT curated_plays.user_id, tracks.track_number, curated_plays.listen_time
    FROM curated_plays
    INNER JOIN stg_play_tracks AS tracks
        ON curated_plays.track_id IS NOT DISTINCT FROM tracks.track_id
),

hours AS (
    SELECT user_id, track_number, utc_hour_number(listen_time) AS hour_number
    FROM plays
)

SELECT
    user_id,
    track_number,
    date_of_hour_number(hour_number) AS kpi_date,
    hour_of_hour_number(hour_number) AS stream_hour
FROM hours
WHERE date_of_hour_number(hour_number) = (SELECT kpi_date FROM kpi_day)
