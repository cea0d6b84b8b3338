-- One row per (track_id, track_genre), the key of docs/kpis.md's songs table: rows repeating a
-- pair count once, and the one with the smallest source id is kept (then a stable order,
-- so the choice never depends on how the database returned the rows).
SELECT * EXCLUDE (reason)
FROM songs_checked
WHERE reason IS NULL
QUALIFY row_number() OVER (
    PARTITION BY track_id, track_genre
    ORDER BY id NULLS LAST, track_name, artists, popularity, duration_ms
) = 1
