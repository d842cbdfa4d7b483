-- The rooms of one room-id range whose folded fingerprints differ, with their difference (rows
-- and xor, room side against chat side: what the keyed diff's proof must account for). A room
-- missing on one side counts as (0, 0) there. Returns how many rooms were compared and differ.
WITH compared AS (
    SELECT coalesce(r.room_id, c.room_id) AS room_id,
           coalesce(r.row_count, 0) - coalesce(c.row_count, 0) AS dn,
           coalesce(r.hash, 0) # coalesce(c.hash, 0) AS dh
    FROM (SELECT room_id, row_count, hash FROM {ops}.room_fingerprints
          WHERE entity = %(entity)s AND side = 'room' AND room_id >= %(room_lo)s AND room_id < %(room_hi)s) AS r
    FULL JOIN (SELECT room_id, row_count, hash FROM {ops}.room_fingerprints
               WHERE entity = %(entity)s AND side = 'chat' AND room_id >= %(room_lo)s AND room_id < %(room_hi)s) AS c
        ON r.room_id = c.room_id
), differing AS (
    INSERT INTO pg_temp.chatsync_differing_rooms (room_id, dn, dh)
    SELECT room_id, dn, dh FROM compared WHERE (dn, dh) <> (0, 0)
    RETURNING 1
)
SELECT (SELECT count(*) FROM compared), (SELECT count(*) FROM differing)
