-- One row per user (user_id is the key of KPIS.md's users table).
SELECT * EXCLUDE (reason, raw_user_id)
FROM users_checked
WHERE reason IS NULL
QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY created_at NULLS LAST, user_name) = 1
