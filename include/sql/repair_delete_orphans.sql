-- Repair, orphan chat rows: delete them, keeping the before-image in the audit. Only rows that
-- still hold what detection saw (digest) and still have no room row are deleted.
WITH todo AS (
    SELECT DISTINCT ON ({finding_key}) {finding_key}, chat_digest
    FROM {ops}.inconsistencies
    WHERE run_id = %(run_id)s AND status = 'open' AND kind = %(orphan_kind)s
      AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
),
deleted AS (
    DELETE FROM {chat} AS c
    USING todo AS t
    WHERE {chat_eq_todo}
      AND {digest_c} = t.chat_digest
      AND NOT EXISTS (SELECT 1 FROM {room} AS r WHERE {room_eq_c})
    RETURNING {chat_key_out}, to_jsonb(c) AS before
)
INSERT INTO {ops}.repair_audit (run_id, entity, action, room_id, user_id, before, after)
SELECT %(run_id)s, {entity}, 'delete', room_id, user_id, before, NULL FROM deleted
