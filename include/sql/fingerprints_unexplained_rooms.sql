-- The proof that the keyed diff saw everything: in a room where every key outside the scope
-- matches, those keys' hashes cancel out, so the room's fingerprint difference (rows and xor,
-- room side against chat side) equals the difference of its scope keys alone. The rooms where it
-- does not hold changed in a way the log missed (or drift predates it): they get a row diff.
WITH scoped_room AS (
    SELECT {room_room_id} AS room_id, count(*) AS n, bit_xor({room_hash}) AS h
    FROM pg_temp.chatsync_scope_keys AS s JOIN {room} AS r ON {room_eq_s} GROUP BY 1
), scoped_chat AS (
    SELECT {chat_room_id} AS room_id, count(*) AS n, bit_xor({chat_hash}) AS h
    FROM pg_temp.chatsync_scope_keys AS s JOIN {chat} AS c ON {chat_eq_s} GROUP BY 1
), explained AS (
    SELECT room_id, coalesce(r.n, 0) - coalesce(c.n, 0) AS dn, coalesce(r.h, 0) # coalesce(c.h, 0) AS dh
    FROM scoped_room AS r FULL JOIN scoped_chat AS c USING (room_id)
), observed AS (
    SELECT room_id, coalesce(r.row_count, 0) - coalesce(c.row_count, 0) AS dn,
           coalesce(r.hash, 0) # coalesce(c.hash, 0) AS dh
    FROM (SELECT * FROM {ops}.room_fingerprints WHERE entity = %(entity)s AND side = 'room'
          AND room_id IN (SELECT room_id FROM pg_temp.chatsync_differing_rooms)) AS r
    FULL JOIN (SELECT * FROM {ops}.room_fingerprints WHERE entity = %(entity)s AND side = 'chat'
               AND room_id IN (SELECT room_id FROM pg_temp.chatsync_differing_rooms)) AS c USING (room_id)
)
SELECT coalesce(array_agg(o.room_id ORDER BY o.room_id), '{{}}')
FROM observed AS o LEFT JOIN explained AS e USING (room_id)
WHERE (o.dn, o.dh) IS DISTINCT FROM (coalesce(e.dn, 0), coalesce(e.dh, 0))
