-- Maintained fingerprints, for the rooms of one room-id range whose fingerprints differ
-- (fingerprints_differing_rooms.sql): diff their scope keys (fingerprints_scope_keys.sql) and
-- prove the rest of each room, in one read of the keys' rows.
-- Where every key outside the scope matches, those keys' hashes cancel, so a room's fingerprint
-- difference (rows and xor, room side against chat side) equals its scope keys' difference. The
-- rooms where it does not (drift older than the log, a write that skipped the triggers) come
-- back for a row diff.
WITH probed AS MATERIALIZED (
    SELECT s.room_id AS scope_room, {key_out}, {kinds_array} AS kinds, {digest} AS chat_digest,
           CASE WHEN NOT ({room_key_is_null}) THEN {room_hash} END AS room_hash,
           CASE WHEN NOT ({chat_key_is_null}) THEN {chat_hash} END AS chat_hash
    FROM pg_temp.chatsync_scope_keys AS s
    LEFT JOIN {room} AS r ON {room_eq_s}
    LEFT JOIN {chat} AS c ON {chat_eq_s}
), found AS (
    INSERT INTO {ops}.inconsistencies (run_id, kind, room_id, user_id, chat_digest)
    SELECT %(run_id)s, k.kind, p.room_id, p.user_id, p.chat_digest
    FROM probed AS p CROSS JOIN LATERAL unnest(p.kinds) AS k(kind)
    WHERE k.kind IS NOT NULL AND (p.room_hash IS NOT NULL OR p.chat_hash IS NOT NULL)
    RETURNING 1
), explained AS (
    SELECT scope_room AS room_id, count(room_hash) - count(chat_hash) AS dn,
           coalesce(bit_xor(room_hash), 0) # coalesce(bit_xor(chat_hash), 0) AS dh
    FROM probed GROUP BY scope_room
)
SELECT (SELECT count(*) FROM probed), (SELECT count(*) FROM found),
       coalesce(array_agg(o.room_id ORDER BY o.room_id), '{{}}')
FROM pg_temp.chatsync_differing_rooms AS o LEFT JOIN explained AS e USING (room_id)
WHERE (o.dn, o.dh) IS DISTINCT FROM (coalesce(e.dn, 0), coalesce(e.dh, 0))
