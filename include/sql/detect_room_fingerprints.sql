-- Per-room fingerprints of one entity on both sides: the row count and the xor of a chained
-- 64-bit hash of each row's key and compared values (the same for a room row and the chat row
-- that matches it). Rooms whose fingerprints differ hold every inconsistency of the entity; the
-- row diff then reads only those rooms. Both aggregates run as parallel plans.
WITH room_side AS (
    SELECT {room_room_id} AS room_id, count(*) AS n, bit_xor({room_hash}) AS h FROM {room} AS r GROUP BY 1
), chat_side AS (
    SELECT {chat_room_id} AS room_id, count(*) AS n, bit_xor({chat_hash}) AS h FROM {chat} AS c GROUP BY 1
)
SELECT coalesce(array_agg(coalesce(r.room_id, c.room_id) ORDER BY coalesce(r.room_id, c.room_id))
                FILTER (WHERE r.n IS DISTINCT FROM c.n OR r.h IS DISTINCT FROM c.h), '{{}}'),
       count(*)
FROM room_side AS r FULL JOIN chat_side AS c ON r.room_id = c.room_id
