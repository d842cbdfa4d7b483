-- Maintenance: the slowest syncs over [start, end).
SELECT event_id, type, room_id, user_id, extract(epoch FROM processed_at - occurred_at)::double precision AS delay_s
FROM {ops}.sync_log WHERE processed_at >= %(start)s AND processed_at < %(end)s
ORDER BY processed_at - occurred_at DESC LIMIT %(limit)s
