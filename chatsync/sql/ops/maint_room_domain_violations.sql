-- Maintenance: the room values repairs held back over [start, end) (outside their field's domain,
-- chatsync.model.domains), by field: how many keys, how often recorded (once per run holding the
-- key back), and the latest one for an example.
SELECT entity, field, count(DISTINCT (room_id, user_id)) AS keys, count(*) AS recorded,
       count(DISTINCT run_id) AS runs,
       (array_agg(value ORDER BY detected_at DESC, room_id, user_id))[1] AS latest_value,
       (array_agg(room_id ORDER BY detected_at DESC, room_id, user_id))[1] AS latest_room_id,
       (array_agg(user_id ORDER BY detected_at DESC, room_id, user_id))[1] AS latest_user_id
FROM {ops}.room_domain_violations
WHERE detected_at >= %(start)s AND detected_at < %(end)s
GROUP BY entity, field
ORDER BY entity, field
