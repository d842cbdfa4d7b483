-- The rooms of a range streamed whole: those the room database sent, those the copy holds, and
-- those the copy's fingerprints still name (their fingerprints are all recomputed or forgotten).
INSERT INTO pg_temp.chatsync_mirror_rooms (room_id)
SELECT {room_col} FROM {stage}
UNION
SELECT m.{room_col} FROM {mirror} AS m WHERE m.{room_col} >= %(room_lo)s AND m.{room_col} < %(room_hi)s
UNION
SELECT f.room_id FROM {ops}.mirror_fingerprints AS f
WHERE f.entity = %(entity)s AND f.room_id >= %(room_lo)s AND f.room_id < %(room_hi)s
