-- Maintenance: keys with an inconsistency detected before `end` and still unresolved.
SELECT DISTINCT room_id, user_id, user_id IS NULL AS is_room
FROM {ops}.inconsistencies
WHERE run_id = ANY({unsettled_runs}) AND resolved_at IS NULL AND detected_at < %(end)s
