-- The rooms of the refreshed part whose copy differs from the room database: the room side's
-- fingerprints (streamed into pg_temp.chatsync_room_fingerprints) against the copy's. A room on
-- one side only differs too. Returns the room ids, with the room side's row count (0: gone).
SELECT coalesce(r.room_id, m.room_id) AS room_id, coalesce(r.row_count, 0) AS row_count
FROM pg_temp.chatsync_room_fingerprints AS r
FULL JOIN (SELECT room_id, row_count, hash FROM {ops}.mirror_fingerprints
           WHERE entity = %(entity)s AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR room_id >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR room_id < %(room_hi)s)) AS m
  ON m.room_id = r.room_id
WHERE r.room_id IS NULL OR m.room_id IS NULL OR (r.row_count, r.hash) <> (m.row_count, m.hash)
ORDER BY 1
