-- The copy's fingerprints for the rooms of a refreshed part (pg_temp.chatsync_mirror_rooms),
-- hashed from the copy itself with the hash the room database computes, in the transaction that
-- changed the copy (after mirror_forget_fingerprints: a room with no row left has none).
INSERT INTO {ops}.mirror_fingerprints (entity, room_id, row_count, hash)
SELECT %(entity)s, m.{room_col}, count(*), bit_xor({row_hash})
FROM {mirror} AS m
WHERE m.{room_col} = {rooms}
GROUP BY m.{room_col}
