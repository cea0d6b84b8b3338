-- Shared helpers, created on every DuckDB connection.

-- Trim ASCII whitespace (space, tab, CR, LF, FF, VT) from both ends. DuckDB's trim()
-- only removes spaces, and "surrounding whitespace" in docs/kpis.md means all of these.
CREATE OR REPLACE TEMP MACRO strip_ws(s) AS
    regexp_replace(s, '^[ \t\r\n\f\v]+|[ \t\r\n\f\v]+$', '', 'g');

-- Date and time of docs/kpis.md rule 3, without the offset: YYYY-MM-DD, 'T' or space,
-- HH:MM:SS (hours 00-23), up to 6 fractional digits.
CREATE OR REPLACE TEMP MACRO iso_date_time_pattern() AS
    '[0-9]{4}-[0-9]{2}-[0-9]{2}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?';

-- docs/kpis.md, valid plays rule 1: an integer, optionally signed.
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

-- docs/kpis.md, valid plays rule 3: YYYY-MM-DD, 'T' or space, HH:MM:SS, up to 6 fractional
-- digits, optional UTC offset (Z, +HH:MM, +HHMM, +HH). Expects upper-cased text; the
-- calendar itself (Feb 30, year 0000, ...) is checked by the cast and range that follow.
CREATE OR REPLACE TEMP MACRO is_iso_timestamp_text(s) AS
    regexp_full_match(s, iso_date_time_pattern() || '(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?');

-- The fast path of stream validation: the spellings nearly every row uses, decided by one
-- cheap test each that accepts exactly what the full rule accepts in that spelling. A row
-- that fails it is not invalid: it goes through the full rule.

-- Rule 1, common spelling: digits only, at most 18 of them (so always a BIGINT), and no
-- leading zero (so the BIGINT prints as written).
CREATE OR REPLACE TEMP MACRO is_plain_user_id(s) AS
    regexp_full_match(s, '0|[1-9][0-9]{0,17}');

-- Rule 2, common spelling: nothing to trim, as no character at either end is whitespace
-- (or another control character, which the full rule keeps). s[-1], its last code point,
-- costs half what right(s, 1) does.
CREATE OR REPLACE TEMP MACRO is_plain_track_id(s) AS
    ascii(s) > 32 AND ascii(s[-1]) > 32;

-- Rules 1 and 3, common spelling: the text is exactly how the value a cast reads from it
-- prints ('42', '2024-06-25 10:00:00', '2024-06-25 10:00:00.5'). The cast is lenient
-- ('1.5' reads as the BIGINT 2, '2024-06-25T10:00' and '... +02' as TIMESTAMPs), the print
-- is not: a text that prints back is one of the rule's spellings (or, for a TIMESTAMP, a
-- value out of years 1-9999, which no valid play has), and its value is the rule's. One
-- cast and one print: several times cheaper than a regular expression before the cast.
CREATE OR REPLACE TEMP MACRO prints_as_written(value, s) AS
    coalesce(CAST(value AS VARCHAR) = s, false);

-- The UTC hour a TIMESTAMPTZ falls in, numbered from 0001-01-01 00:00 UTC (62,135,596,800
-- seconds before the epoch), by integer arithmetic on its epoch: date and hour functions
-- on TIMESTAMPTZ go through the ICU calendar, several times slower on millions of plays.
-- Years 1-9999 only (as valid plays are), where the sum is never negative.
CREATE OR REPLACE TEMP MACRO utc_hour_number(t) AS
    (epoch_us(t) + 62135596800000000) // 3600000000;

CREATE OR REPLACE TEMP MACRO date_of_hour_number(h) AS
    DATE '0001-01-01' + CAST(h // 24 AS INTEGER);

CREATE OR REPLACE TEMP MACRO hour_of_hour_number(h) AS
    CAST(h % 24 AS INTEGER);

-- The longest prefix of s whose UTF-8 encoding fits in n bytes, cut at a character
-- boundary (kpi_pipeline.warehouse.schema.truncate_utf8 in Python): what a VARCHAR(n) of
-- Redshift holds, whose width is in bytes.
CREATE OR REPLACE TEMP MACRO fit_bytes(s, n) AS
    CASE
        WHEN s IS NULL OR strlen(s) <= n THEN s
        ELSE left(s, list_max(list_filter(range(0, n + 1), lambda k: strlen(left(s, k)) <= n)))
    END;
