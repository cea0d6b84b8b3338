-- Every valid play ever accepted for the dates being computed, once: the same play
-- delivered in two files (or twice in one) is one play (KPIS.md "Valid plays").
-- Each play carries the songs catalogue its date is computed with.
-- Inputs: curated_plays (curated Parquet of those dates), target_dates(kpi_date, catalogue).
WITH plays AS (
    SELECT DISTINCT
        user_id,
        track_id,
        listen_time,
        CAST(listen_time AS DATE) AS kpi_date,  -- the session runs in UTC
        CAST(hour(listen_time) AS INTEGER) AS stream_hour
    FROM curated_plays
)

SELECT
    plays.*,
    target_dates.catalogue
FROM plays
INNER JOIN target_dates ON plays.kpi_date = target_dates.kpi_date
