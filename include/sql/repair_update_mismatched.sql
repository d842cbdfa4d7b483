-- Repair, mismatched chat rows: set the compared columns from the room side, with the
-- before/after image in the audit. The chat rows are locked first; a row is changed only if it
-- still holds what detection saw (digest) and still differs from the room row, so a concurrent
-- application write is never overwritten.
WITH todo AS (
    SELECT DISTINCT ON ({finding_key}) {finding_key}, chat_digest
    FROM {ops}.inconsistencies
    WHERE run_id = %(run_id)s AND status = 'open' AND kind = ANY(%(mismatch_kinds)s)
      AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
),
locked AS (
    SELECT c.*, t.chat_digest AS chatsync_detected_digest
    FROM {chat} AS c
    JOIN todo AS t ON {chat_eq_todo}
    ORDER BY {chat_key_c}
    FOR UPDATE OF c
),
updated AS (
    UPDATE {chat} AS c
    SET {set_from_room}
    FROM locked AS l
    JOIN {room} AS r ON {room_eq_locked}
    WHERE {chat_eq_locked}
      AND {digest_locked} = l.chatsync_detected_digest
      AND ({still_differs})
    RETURNING {chat_key_out}, to_jsonb(l) - 'chatsync_detected_digest' AS before, to_jsonb(c) AS after
)
INSERT INTO {ops}.repair_audit (run_id, entity, action, room_id, user_id, before, after)
SELECT %(run_id)s, {entity}, 'update', room_id, user_id, before, after FROM updated
