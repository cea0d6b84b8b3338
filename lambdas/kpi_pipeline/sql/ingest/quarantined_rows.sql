-- The quarantined rows of one stream file that parsed into fields, each with its reason and
-- its values as written (docs/kpis.md: quarantined with its reason, never silently dropped).
-- Input: classified_rows (classify_stream_rows.sql). The rows whose field count is not the
-- header's (malformed_row) are kept as read, beside these (kpi_pipeline.ingest).
SELECT
    record_number,
    -- parse_stream_rows.sql keeps a raw value only where the typed one does not spell it
    coalesce(raw_user_id, CAST(user_id AS VARCHAR)) AS user_id,
    coalesce(raw_track_id, track_id) AS track_id,
    coalesce(raw_listen_time, CAST(listen_time AS VARCHAR)) AS listen_time,
    CAST(NULL AS VARCHAR) AS raw_record,
    reason
FROM classified_rows
WHERE reason IS NOT NULL

