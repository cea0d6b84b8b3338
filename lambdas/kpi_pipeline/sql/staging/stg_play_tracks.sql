-- The tracks the date's curated plays name, each with a number of its own: the plays are
-- de-duplicated and counted by it (stg_plays.sql, int_hourly_track_plays.sql), as keys of
-- fixed width hash and compare several times faster than text, and the text comes back
-- once per track and hour, at the end. Numbered from the plays, not from the catalogue: a
-- track the catalogue lacks is still a play (counted hourly, in no genre).
-- Inputs: curated_plays (the curated Parquet of the date).
SELECT track_id, CAST(row_number() OVER () AS INTEGER) AS track_number
FROM (SELECT DISTINCT track_id FROM curated_plays)
