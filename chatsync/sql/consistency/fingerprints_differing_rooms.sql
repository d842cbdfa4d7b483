-- Per-room fingerprints of one entity on both sides: the row count and the xor of a chained
-- 64-bit hash of each row's key and compared values (the same for a room row and the chat row
-- that matches it). Rooms whose fingerprints differ hold every inconsistency of the entity; they
-- go to pg_temp.chatsync_differing_rooms with their difference (rows and xor, room side against
-- chat side: what the keyed diff's proof must account for), a room missing on one side counting
-- as (0, 0) there. {room_side} and {chat_side} (room_id, n, h) are either hashed from the tables
-- here (parallel aggregates) or read from the maintained fingerprints (one room-id range).
-- Returns how many rooms were compared and differ.
WITH compared AS (
    SELECT coalesce(r.room_id, c.room_id) AS room_id,
           coalesce(r.n, 0) - coalesce(c.n, 0) AS dn, coalesce(r.h, 0) # coalesce(c.h, 0) AS dh
    FROM ({room_side}) AS r FULL JOIN ({chat_side}) AS c ON r.room_id = c.room_id
), differing AS (
    INSERT INTO pg_temp.chatsync_differing_rooms (room_id, dn, dh)
    SELECT room_id, dn, dh FROM compared WHERE (dn, dh) <> (0, 0)
    RETURNING 1
)
SELECT (SELECT count(*) FROM compared), (SELECT count(*) FROM differing)
