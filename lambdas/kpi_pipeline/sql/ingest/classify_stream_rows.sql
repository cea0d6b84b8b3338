-- Every parsed row of one stream file, with the first rule of docs/kpis.md "Valid plays" it
-- breaks (reason IS NULL for a valid play). Rule 4 is checked against the snapshot of the
-- row's own date: a late file is judged as it would have been on time.
-- Inputs: parsed_rows (parse_stream_rows.sql), date_snapshots(kpi_date, snapshot),
--         known_users(snapshot, user_id), known_tracks(snapshot, track_id).
SELECT
    parsed_rows.record_number,
    parsed_rows.raw_user_id,
    parsed_rows.raw_track_id,
    parsed_rows.raw_listen_time,
    parsed_rows.user_id,
    parsed_rows.track_id_text AS track_id,
    parsed_rows.listen_time,
    parsed_rows.kpi_date,
    CASE
        WHEN NOT parsed_rows.user_id_is_integer THEN 'invalid_user_id'
        WHEN parsed_rows.track_id_text = '' THEN 'missing_track_id'
        WHEN parsed_rows.listen_time IS NULL THEN 'invalid_listen_time'
        WHEN known_users.user_id IS NULL THEN 'unknown_user_id'
        WHEN known_tracks.track_id IS NULL THEN 'unknown_track_id'
    END AS reason
FROM parsed_rows
LEFT JOIN date_snapshots ON parsed_rows.kpi_date = date_snapshots.kpi_date
LEFT JOIN known_users
    ON date_snapshots.snapshot = known_users.snapshot
    AND parsed_rows.user_id = known_users.user_id
LEFT JOIN known_tracks
    ON date_snapshots.snapshot = known_tracks.snapshot
    AND parsed_rows.track_id_text = known_tracks.track_id
