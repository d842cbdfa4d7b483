-- Detect: every rule one entity breaks inside the scope, one finding per (key, kind).
-- A FULL OUTER JOIN of the room side (truth) and the chat side, each restricted to the scope
-- before the join; only rows that break a rule reach the kinds array and the digest.
INSERT INTO {ops}.inconsistencies (run_id, kind, room_id, user_id, chat_digest)
SELECT %(run_id)s, k.kind, d.room_id, d.user_id, d.chat_digest
FROM (
    SELECT {key_out}, {kinds} AS kinds, {digest} AS chat_digest
    FROM (SELECT * FROM {room} WHERE {room_filter}) AS r
    FULL OUTER JOIN (SELECT * FROM {chat} WHERE {chat_filter}) AS c ON {join_on}
    WHERE {differs}
) AS d
CROSS JOIN LATERAL unnest(d.kinds) AS k(kind)
WHERE k.kind IS NOT NULL
