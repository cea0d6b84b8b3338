-- unique_listeners (docs/kpis.md): the distinct users with at least one play in the UTC hour.
-- Inputs: stg_plays (one date).
WITH listeners AS (
    SELECT DISTINCT kpi_date, stream_hour, user_id
    FROM stg_plays
)

SELECT kpi_date, stream_hour, count(*) AS unique_listeners
FROM listeners
GROUP BY kpi_date, stream_hour
