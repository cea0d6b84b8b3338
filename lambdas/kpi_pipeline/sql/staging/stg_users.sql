-- One row per user id (user_id is the key of docs/kpis.md's users table): the ids are all the
-- pipeline keeps of users.
SELECT DISTINCT user_id
FROM users_checked
WHERE reason IS NULL
