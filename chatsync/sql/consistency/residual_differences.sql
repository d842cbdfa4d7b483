-- What still differs between the room side and the chat side for one entity, over whole tables.
-- Read by the validation suite ("no remaining differences"); same rules as detect_findings, less
-- the rows a repair holds back (held_back: a room value outside its field's domain, reported in
-- room_domain_violations; FALSE without domains).
SELECT k.kind, d.room_id, d.user_id
FROM (
    SELECT {key_out}, {kinds} AS kinds
    FROM {room} AS r
    FULL OUTER JOIN {chat} AS c ON {join_on}
    WHERE ({differs}) AND NOT ({held_back})
) AS d
CROSS JOIN LATERAL unnest(d.kinds) AS k(kind)
WHERE k.kind IS NOT NULL
