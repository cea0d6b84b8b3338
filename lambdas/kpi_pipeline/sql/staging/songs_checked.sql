-- Source songs, typed; reason IS NULL for a row the KPIs can use. Input: raw_songs (text).
-- A song row needs a track id and a genre (its key), and the two numbers KPIs read:
-- popularity in 0..100 and a non-negative duration in milliseconds. Its key must fit the
-- warehouse (widths in bytes, as Redshift counts them): a track id of at most 256 bytes, a
-- genre of at most 255 (track_genre's width: a longer genre could not be told apart from
-- another that starts alike). Cut to fit, a key would merge rows: the row is quarantined.
WITH typed AS (
    SELECT
        TRY_CAST(integral_value(strip_ws(id)) AS BIGINT) AS id,
        strip_ws(track_id) AS track_id,
        artists,
        album_name,
        track_name,
        -- Integral values, whatever the column's type (INTEGER, NUMERIC(5,2), DOUBLE, TEXT).
        TRY_CAST(integral_value(strip_ws(popularity)) AS INTEGER) AS popularity,
        TRY_CAST(integral_value(strip_ws(duration_ms)) AS BIGINT) AS duration_ms,
        TRY_CAST(explicit AS BOOLEAN) AS explicit,
        TRY_CAST(danceability AS DOUBLE) AS danceability,
        TRY_CAST(energy AS DOUBLE) AS energy,
        TRY_CAST(integral_value(strip_ws(key)) AS INTEGER) AS key,
        TRY_CAST(loudness AS DOUBLE) AS loudness,
        TRY_CAST(integral_value(strip_ws(mode)) AS INTEGER) AS mode,
        TRY_CAST(speechiness AS DOUBLE) AS speechiness,
        TRY_CAST(acousticness AS DOUBLE) AS acousticness,
        TRY_CAST(instrumentalness AS DOUBLE) AS instrumentalness,
        TRY_CAST(liveness AS DOUBLE) AS liveness,
        TRY_CAST(valence AS DOUBLE) AS valence,
        TRY_CAST(tempo AS DOUBLE) AS tempo,
        TRY_CAST(integral_value(strip_ws(time_signature)) AS INTEGER) AS time_signature,
        strip_ws(track_genre) AS track_genre,
        popularity AS raw_popularity,
        duration_ms AS raw_duration_ms
    FROM raw_songs
)

SELECT
    * EXCLUDE (raw_popularity, raw_duration_ms),
    CASE
        WHEN coalesce(track_id, '') = '' THEN 'missing_track_id'
        WHEN coalesce(track_genre, '') = '' THEN 'missing_track_genre'
        WHEN strlen(track_id) > 256 THEN 'track_id_too_long'
        WHEN strlen(track_genre) > 255 THEN 'track_genre_too_long'
        WHEN popularity IS NULL OR popularity NOT BETWEEN 0 AND 100 THEN 'invalid_popularity'
        WHEN duration_ms IS NULL OR duration_ms < 0 THEN 'invalid_duration_ms'
    END AS reason
FROM typed
