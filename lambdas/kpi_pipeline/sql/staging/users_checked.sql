-- Source users, typed; reason IS NULL for a usable row. Input: raw_users (all text).
-- user_id may be any integral number (a NUMERIC key prints '42.00'); the common spelling
-- (plain digits) is cast directly, the full rule reads the rest (the same value: see
-- is_plain_user_id). Only user_id leaves the source: the other columns are NULL here.
WITH typed AS (
    SELECT
        *,
        CASE
            WHEN is_plain_user_id(user_id) THEN CAST(user_id AS BIGINT)
            ELSE TRY_CAST(integral_value(strip_ws(user_id)) AS BIGINT)
        END AS user_id_value
    FROM raw_users
)
SELECT
    user_id_value AS user_id,
    user_id AS raw_user_id,
    user_name,
    TRY_CAST(integral_value(strip_ws(user_age)) AS INTEGER) AS user_age,
    user_country,
    TRY_CAST(created_at AS TIMESTAMP) AS created_at,
    CASE WHEN user_id_value IS NULL THEN 'invalid_user_id' END AS reason
FROM typed
