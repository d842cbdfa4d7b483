-- Per-room fingerprints of one entity on both sides: the row count and the xor of a chained
-- 64-bit hash of each row's key and compared values (the same for a room row and the chat row
-- that matches it). Rooms whose fingerprints differ hold every inconsistency of the entity; the
-- row diff then reads only those rooms. {room_side} and {chat_side} (room_id, n, h) are either
-- hashed from the tables here (parallel aggregates) or read from the maintained fingerprints.
WITH room_side AS ({room_side}), chat_side AS ({chat_side})
SELECT coalesce(array_agg(coalesce(r.room_id, c.room_id) ORDER BY coalesce(r.room_id, c.room_id))
                FILTER (WHERE r.n IS DISTINCT FROM c.n OR r.h IS DISTINCT FROM c.h), '{{}}'),
       count(*)
FROM room_side AS r FULL JOIN chat_side AS c ON r.room_id = c.room_id
