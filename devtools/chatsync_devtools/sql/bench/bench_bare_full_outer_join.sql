-- Benchmark baseline: the textbook diff of the participant tables, one FULL OUTER JOIN,
-- returning the differing keys (what any hand-written consistency check would run).
SELECT coalesce(r.room_id, c.room_id) AS room_id, coalesce(r.user_id, c.user_id) AS user_id
FROM room.room_participants AS r
FULL OUTER JOIN chat.chat_participants AS c ON r.room_id = c.room_id AND r.user_id = c.user_id
WHERE r.room_id IS NULL OR c.room_id IS NULL
   OR r.role IS DISTINCT FROM c.role
   OR r.permissions IS DISTINCT FROM c.permissions
   OR (r.banned_at IS NOT NULL) IS DISTINCT FROM c.banned
