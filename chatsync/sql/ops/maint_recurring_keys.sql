-- Maintenance: keys found inconsistent by several distinct runs over [since, end): they keep
-- coming back (something upstream keeps breaking them), so they go to a person.
SELECT kind, room_id, user_id, count(DISTINCT run_id) AS runs, min(detected_at), max(detected_at)
FROM {ops}.inconsistencies
WHERE detected_at >= %(since)s AND detected_at < %(end)s
GROUP BY kind, room_id, user_id
HAVING count(DISTINCT run_id) >= %(min_runs)s
ORDER BY runs DESC, room_id, user_id LIMIT 100
