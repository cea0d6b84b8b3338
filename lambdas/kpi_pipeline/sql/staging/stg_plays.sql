-- Every valid play ever accepted for the dates being computed, once: the same play
-- delivered in two files (or twice in one) is one play (KPIS.md "Valid plays").
-- Inputs: curated_plays (all curated Parquet of those dates), target_dates(kpi_date).
SELECT DISTINCT
    user_id,
    track_id,
    listen_time,
    CAST(listen_time AS DATE) AS kpi_date,  -- the session runs in UTC
    CAST(hour(listen_time) AS INTEGER) AS stream_hour
FROM curated_plays
WHERE CAST(listen_time AS DATE) IN (SELECT kpi_date FROM target_dates)
