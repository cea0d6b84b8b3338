-- Source users, typed; reason IS NULL for a usable row. Input: raw_users (all text).
-- user_id may be any integral number (a NUMERIC key prints '42.00').
SELECT
    TRY_CAST(integral_value(strip_ws(user_id)) AS BIGINT) AS user_id,
    user_id AS raw_user_id,
    user_name,
    TRY_CAST(integral_value(strip_ws(user_age)) AS INTEGER) AS user_age,
    user_country,
    TRY_CAST(created_at AS TIMESTAMP) AS created_at,
    CASE
        WHEN TRY_CAST(integral_value(strip_ws(user_id)) AS BIGINT) IS NULL
            THEN 'invalid_user_id'
    END AS reason
FROM raw_users
