-- Every artist credited on any row of a track, once per track (and catalogue): docs/kpis.md's
-- artists, split on ';' and trimmed, blanks dropped. The warehouse engine reads the same
-- table, so no dialect there needs to split strings. A name is kept to its first 255 bytes,
-- what top_artists holds (and what the warehouse's COPY can take: it cannot truncate).
-- Inputs: songs (per catalogue: one row per track and genre).
SELECT DISTINCT
    songs.catalogue,
    songs.track_id,
    fit_bytes(strip_ws(credit.artist), 255) AS artist
FROM songs, unnest(string_split(songs.artists, ';')) AS credit (artist)
WHERE strip_ws(credit.artist) <> ''
