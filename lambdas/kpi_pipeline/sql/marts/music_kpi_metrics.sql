-- Both KPI families in the shape of the warehouse table music_kpi_metrics (docs/kpis.md),
-- in its column order; loaded_at is set by the load. Inputs: genre_daily_kpis,
-- hourly_kpis, run_context(run_id).
SELECT
    'genre' AS kpi_type,
    kpi_date,
    track_genre,
    CAST(listen_count AS BIGINT) AS listen_count,
    CAST(avg_track_duration_sec AS DOUBLE) AS avg_track_duration_sec,
    CAST(popularity_index AS DOUBLE) AS popularity_index,
    most_popular_track,
    most_popular_track_id,
    CAST(NULL AS INTEGER) AS stream_hour,
    CAST(NULL AS INTEGER) AS unique_listeners,
    CAST(NULL AS VARCHAR) AS top_artists,
    CAST(NULL AS DOUBLE) AS track_diversity_index,
    (SELECT run_id FROM run_context) AS run_id
FROM genre_daily_kpis

UNION ALL

SELECT
    'hourly' AS kpi_type,
    kpi_date,
    NULL AS track_genre,
    CAST(listen_count AS BIGINT) AS listen_count,
    NULL AS avg_track_duration_sec,
    NULL AS popularity_index,
    NULL AS most_popular_track,
    NULL AS most_popular_track_id,
    CAST(stream_hour AS INTEGER) AS stream_hour,
    CAST(unique_listeners AS INTEGER) AS unique_listeners,
    top_artists,
    CAST(track_diversity_index AS DOUBLE) AS track_diversity_index,
    (SELECT run_id FROM run_context) AS run_id
FROM hourly_kpis
