-- Every parsed row of one stream file, with the first rule of KPIS.md "Valid plays" it
-- breaks (reason IS NULL for a valid play).
-- Inputs: raw_rows(record_number, user_id, track_id, listen_time) as text,
--         known_users(user_id), known_tracks(track_id).
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
        END AS listen_time
    FROM cleaned
)

SELECT
    parsed.record_number,
    parsed.raw_user_id,
    parsed.raw_track_id,
    parsed.raw_listen_time,
    TRY_CAST(parsed.user_id AS BIGINT) AS user_id,
    parsed.track_id_text AS track_id,
    parsed.listen_time,
    CASE
        WHEN NOT parsed.user_id_is_integer THEN 'invalid_user_id'
        WHEN parsed.track_id_text = '' THEN 'missing_track_id'
        WHEN parsed.listen_time IS NULL THEN 'invalid_listen_time'
        WHEN known_users.user_id IS NULL THEN 'unknown_user_id'
        WHEN known_tracks.track_id IS NULL THEN 'unknown_track_id'
    END AS reason
FROM parsed
LEFT JOIN known_users ON parsed.user_id = known_users.user_id
LEFT JOIN known_tracks ON parsed.track_id_text = known_tracks.track_id
