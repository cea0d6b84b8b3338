-- Plays per track and UTC hour, with the songs catalogue of the play's date: every KPI
-- but unique_listeners is an aggregate of these counts, a few hundred thousand rows where
-- stg_plays has millions. Counted by track number, named once per track and hour.
-- Inputs: stg_plays (one date), stg_play_tracks, target_dates(kpi_date, catalogue).
WITH counts AS (
    SELECT kpi_date, stream_hour, track_number, count(*) AS plays
    FROM stg_plays
    GROUP BY kpi_date, stream_hour, track_number
)

SELECT
    counts.kpi_date,
    counts.stream_hour,
    tracks.track_id,
    target_dates.catalogue,
    counts.plays
FROM counts
INNER JOIN stg_play_tracks AS tracks ON counts.track_number = tracks.track_number
INNER JOIN target_dates ON counts.kpi_date = target_dates.kpi_date
