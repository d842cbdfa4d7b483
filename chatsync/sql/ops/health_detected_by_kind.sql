-- Health: inconsistencies detected over [start, end), by kind (each key and kind once).
SELECT kind, count(*) FROM (
    SELECT DISTINCT kind, room_id, user_id FROM {ops}.inconsistencies
    WHERE detected_at >= %(start)s AND detected_at < %(end)s
) AS found
GROUP BY kind
