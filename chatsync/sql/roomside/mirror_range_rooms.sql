-- The rooms of a range loaded whole: those the copy now holds, and those the copy's fingerprints
-- still name (all their fingerprints are recomputed, or forgotten when the room is gone).
INSERT INTO pg_temp.chatsync_mirror_rooms (room_id)
SELECT DISTINCT m.{room_col} FROM {mirror} AS m WHERE (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR m.{room_col} >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR m.{room_col} < %(room_hi)s)
UNION
SELECT f.room_id FROM {ops}.mirror_fingerprints AS f
WHERE f.entity = %(entity)s AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR f.room_id >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR f.room_id < %(room_hi)s)
