-- Every artist credited on any row of a track, once per track (and catalogue): KPIS.md's
-- artists, split on ';' and trimmed, blanks dropped. The warehouse engine reads the same
-- table, so no dialect there needs to split strings.
-- Inputs: songs (per catalogue: one row per track and genre).
SELECT DISTINCT
    songs.catalogue,
    songs.track_id,
    strip_ws(credit.artist) AS artist
FROM songs, unnest(string_split(songs.artists, ';')) AS credit (artist)
WHERE strip_ws(credit.artist) <> ''
