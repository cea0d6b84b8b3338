-- Every parsed row of one stream file, typed: what rules 1-3 of KPIS.md "Valid plays" need,
-- and the row's kpi_date (whose snapshot checks rule 4, see classify_stream_rows.sql).
-- Input: raw_rows(record_number, user_id, track_id, listen_time) as text.
WITH cleaned AS (
    SELECT
        record_number,
        user_id AS raw_user_id,
        track_id AS raw_track_id,
        listen_time AS raw_listen_time,
        strip_ws(user_id) AS user_id_text,
        strip_ws(track_id) AS track_id_text,
        upper(strip_ws(listen_time)) AS listen_time_text
    FROM raw_rows
),

parsed AS (
    SELECT
        *,
        is_integer_text(user_id_text) AS user_id_is_integer,
        -- HUGEINT: a 30-digit id is an integer (rule 1) that no user has (rule 4).
        CASE WHEN is_integer_text(user_id_text) THEN TRY_CAST(user_id_text AS HUGEINT) END
            AS user_id,
        CASE
            WHEN is_iso_timestamp_text(listen_time_text)
                THEN TRY_CAST(listen_time_text AS TIMESTAMPTZ)
        END AS any_listen_time
    FROM cleaned
),

in_range AS (
    SELECT
        *,
        -- An offset can carry a time written in year 0001 or 9999 out of years 1-9999 in
        -- UTC (0001-01-01 00:30:00+01:00 is in 1 BC): that instant has no YYYY-MM-DD
        -- kpi_date (and Python cannot hold it, so writing the plays failed). Invalid, like
        -- a year 0000 written out.
        CASE
            WHEN any_listen_time >= TIMESTAMPTZ '0001-01-01 00:00:00+00'
                AND any_listen_time < TIMESTAMPTZ '10000-01-01 00:00:00+00'
                THEN any_listen_time
        END AS listen_time
    FROM parsed
)

SELECT
    record_number,
    raw_user_id,
    raw_track_id,
    raw_listen_time,
    user_id_is_integer,
    user_id,
    track_id_text,
    listen_time,
    CAST(listen_time AS DATE) AS kpi_date  -- the session computes in UTC
FROM in_range
