-- Source users, typed; reason IS NULL for a usable row. Input: raw_users (all text).
SELECT
    TRY_CAST(strip_ws(user_id) AS BIGINT) AS user_id,
    user_id AS raw_user_id,
    user_name,
    TRY_CAST(strip_ws(user_age) AS INTEGER) AS user_age,
    user_country,
    TRY_CAST(created_at AS TIMESTAMP) AS created_at,
    CASE
        WHEN NOT coalesce(is_integer_text(strip_ws(user_id)), false)
            OR TRY_CAST(strip_ws(user_id) AS BIGINT) IS NULL
            THEN 'invalid_user_id'
    END AS reason
FROM raw_users
