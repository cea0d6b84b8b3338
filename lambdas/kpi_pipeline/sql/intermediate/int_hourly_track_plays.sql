-- Plays per track and UTC hour, with the songs catalogue of the play's date: every KPI
-- but unique_listeners is an aggregate of these counts, a few hundred thousand rows where
-- stg_plays has millions.
-- Inputs: stg_plays (one date), target_dates(kpi_date, catalogue).
WITH counts AS (
    SELECT kpi_date, stream_hour, track_id, count(*) AS plays
    FROM stg_plays
    GROUP BY kpi_date, stream_hour, track_id
)

SELECT
    counts.kpi_date,
    counts.stream_hour,
    counts.track_id,
    target_dates.catalogue,
    counts.plays
FROM counts
INNER JOIN target_dates ON counts.kpi_date = target_dates.kpi_date
