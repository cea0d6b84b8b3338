-- Shared helpers, created on every DuckDB connection.

-- Trim ASCII whitespace (space, tab, CR, LF, FF, VT) from both ends. DuckDB's trim()
-- only removes spaces, and "surrounding whitespace" in KPIS.md means all of these.
CREATE OR REPLACE TEMP MACRO strip_ws(s) AS
    regexp_replace(s, '^[ \t\r\n\f\v]+|[ \t\r\n\f\v]+$', '', 'g');

-- KPIS.md, valid plays rule 1: an integer, optionally signed.
CREATE OR REPLACE TEMP MACRO is_integer_text(s) AS
    regexp_full_match(s, '[+-]?[0-9]+');

-- An integral number of a source column, however its type prints it: '80' (INTEGER, TEXT),
-- '80.00' (NUMERIC with a scale), '180000.0' (plain NUMERIC), '1.8e+05' (a float). NULL for
-- anything that is not an integer ('80.5', 'abc'): those rows are quarantined.
CREATE OR REPLACE TEMP MACRO integral_value(s) AS
    CASE
        WHEN regexp_full_match(s, '[+-]?[0-9]+') THEN TRY_CAST(s AS HUGEINT)
        WHEN regexp_full_match(s, '[+-]?[0-9]+\.0+')
            THEN TRY_CAST(split_part(s, '.', 1) AS HUGEINT)
        WHEN regexp_full_match(s, '[+-]?[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+')
            AND TRY_CAST(s AS DOUBLE) = round(TRY_CAST(s AS DOUBLE))
            THEN TRY_CAST(TRY_CAST(s AS DOUBLE) AS HUGEINT)
    END;

-- KPIS.md, valid plays rule 3: YYYY-MM-DD, 'T' or space, HH:MM:SS, up to 6 fractional
-- digits, optional UTC offset (Z, +HH:MM, +HHMM, +HH). Expects upper-cased text; the
-- calendar itself (Feb 30, year 0000, ...) is checked by the cast and range that follow.
CREATE OR REPLACE TEMP MACRO is_iso_timestamp_text(s) AS
    regexp_full_match(
        s,
        '[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]'
        || '(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?'
        || '(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?'
    );
