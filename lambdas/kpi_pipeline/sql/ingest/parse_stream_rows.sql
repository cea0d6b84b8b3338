-- Every parsed row of one stream file, typed: what rules 1-3 of docs/kpis.md "Valid plays" need,
-- and the row's kpi_date (whose snapshot checks rule 4, see classify_stream_rows.sql).
-- Input: raw_rows(record_number, user_id, track_id, listen_time) as text.
--
-- Nearly every row spells its values the common way: a plain user id, nothing to trim, a
-- timestamp in UTC as DuckDB prints it. A cast reads that spelling, and printing the value
-- back tells it is that spelling (macros.sql, prints_as_written; is_plain_track_id); only
-- the other rows go through each rule's full chain of trimming, signs, case and offsets.
-- Both give the same value for any text both accept.
-- listen_time is the UTC wall time (TIMESTAMP): cheaper to compare and to date than
-- TIMESTAMPTZ, which is what the curated plays hold.
--
-- The text as written (raw_*) is kept only where the typed value does not print as it is
-- written (NULL otherwise): quarantined_rows.sql spells it out for a quarantined row.
WITH cast_rows AS (
    SELECT
        *,
        TRY_CAST(user_id AS BIGINT) AS cast_user_id,
        TRY_CAST(listen_time AS TIMESTAMP) AS cast_listen_time
    FROM raw_rows
),

spelled AS (
    SELECT
        *,
        prints_as_written(cast_user_id, user_id) AS plain_user_id,
        is_plain_track_id(track_id) AS plain_track_id,
        prints_as_written(cast_listen_time, listen_time) AS plain_listen_time
    FROM cast_rows
),

typed AS (
    SELECT
        record_number,
        CASE WHEN NOT plain_user_id THEN user_id END AS raw_user_id,
        CASE WHEN NOT plain_track_id THEN track_id END AS raw_track_id,
        listen_time AS raw_listen_time,
        plain_listen_time,
        CASE
            WHEN plain_user_id THEN true
            ELSE is_integer_text(strip_ws(user_id))
        END AS user_id_is_integer,
        -- NULL for an integer beyond BIGINT: rule 1 holds, and no user has it (rule 4).
        CASE
            WHEN plain_user_id THEN cast_user_id
            WHEN is_integer_text(strip_ws(user_id)) THEN TRY_CAST(strip_ws(user_id) AS BIGINT)
        END AS user_id,
        CASE WHEN plain_track_id THEN track_id ELSE strip_ws(track_id) END AS track_id_text,
        CASE
            WHEN plain_listen_time THEN cast_listen_time
            WHEN is_iso_timestamp_text(upper(strip_ws(listen_time)))
                THEN CAST(TRY_CAST(upper(strip_ws(listen_time)) AS TIMESTAMPTZ) AS TIMESTAMP)
        END AS utc_listen_time
    FROM spelled
),

in_range AS (
    SELECT
        * EXCLUDE (utc_listen_time, raw_listen_time, plain_listen_time),
        -- An offset can carry a time written in year 0001 or 9999 out of years 1-9999 in
        -- UTC (0001-01-01 00:30:00+01:00 is in 1 BC): that instant has no YYYY-MM-DD
        -- kpi_date (and Python cannot hold it, so writing the plays failed). Invalid, like
        -- a year 0000 written out.
        CASE
            WHEN utc_listen_time >= TIMESTAMP '0001-01-01 00:00:00'
                AND utc_listen_time < TIMESTAMP '10000-01-01 00:00:00'
                THEN utc_listen_time
        END AS listen_time,
        raw_listen_time,
        plain_listen_time
    FROM typed
)

SELECT
    * EXCLUDE (raw_listen_time, plain_listen_time),
    -- a valid listen_time written as it prints needs no raw text
    CASE
        WHEN NOT (plain_listen_time AND listen_time IS NOT NULL) THEN raw_listen_time
    END AS raw_listen_time,
    CAST(listen_time AS DATE) AS kpi_date
FROM in_range
