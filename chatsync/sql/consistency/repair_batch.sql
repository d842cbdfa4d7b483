-- Repair one entity for the rooms of one batch, in one statement (one pass over the findings):
-- mark the batch's findings repaired as they are read, insert the missing chat rows, update the
-- mismatched ones, delete the orphans, and write an audit row with the before/after image of
-- each. It returns the changes by action and how many keys the findings name: when fewer rows
-- changed than that (rows changed since detection, rare), repair_mark_skipped.sql marks the
-- findings of the rows left alone skipped again, in the same transaction.
-- Every change re-checks itself, so a concurrent application write is never overwritten:
--  * insert: the room row must still exist; a chat row that appeared meanwhile is left alone;
--  * update: the row must still hold what detection saw (digest, updated_at included) and still
--    differ. The before-image is the very row version updated: `o` is read in the statement's
--    snapshot and is the same tuple (ctid and xmin); if another transaction updates the row
--    first, the re-check meets a new version with another xmin and the row is skipped (left for
--    the next run). xmin, not ctid alone: a TID scan does not re-check its ctid condition;
--  * delete: the row must still hold what detection saw and still have no room row.
-- A room row holding a value outside its field's domain (held_back_*: FALSE without domains) is
-- neither inserted nor copied: left alone, its findings are held back by repair_hold_back.sql.
WITH todo AS (
    UPDATE {ops}.inconsistencies
    SET status = 'repaired', resolved_at = clock_timestamp(), resolved_by_run = %(run_id)s
    WHERE run_id = %(run_id)s AND status = 'open' AND kind = ANY(%(kinds)s)
      AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR room_id >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR room_id < %(room_hi)s) AND {is_entity_finding}
    RETURNING kind, room_id, user_id, chat_digest
),
inserted AS (
    INSERT INTO {chat} AS c ({insert_columns})
    SELECT {insert_values}
    FROM (SELECT DISTINCT room_id, user_id FROM todo WHERE kind = %(missing_kind)s) AS t
    JOIN {room} AS r ON {room_eq_todo}
    WHERE NOT ({held_back_insert})
    ORDER BY 1
    ON CONFLICT DO NOTHING
    RETURNING {chat_key_out}, to_jsonb(c) AS after
),
updated AS (
    UPDATE {chat} AS c
    SET {set_from_room}
    FROM (SELECT DISTINCT ON (room_id, user_id) room_id, user_id, chat_digest FROM todo
          WHERE kind = ANY(%(mismatch_kinds)s)) AS t
    JOIN {chat} AS o ON {chat_eq_todo_o}
    JOIN {room} AS r ON {room_eq_old}
    WHERE c.ctid = o.ctid AND c.xmin = o.xmin
      AND {digest_c} = t.chat_digest
      AND ({still_differs})
      AND NOT ({held_back_update})
    RETURNING {chat_key_out}, to_jsonb(o) AS before, to_jsonb(c) AS after
),
deleted AS (
    DELETE FROM {chat} AS c
    USING (SELECT DISTINCT ON (room_id, user_id) room_id, user_id, chat_digest FROM todo
           WHERE kind = %(orphan_kind)s) AS t
    WHERE {chat_eq_todo}
      AND {digest_c} = t.chat_digest
      AND NOT EXISTS (SELECT 1 FROM {room} AS r WHERE {room_eq_c})
    RETURNING {chat_key_out}, to_jsonb(c) AS before
),
audited AS (
    INSERT INTO {ops}.repair_audit (run_id, entity, action, room_id, user_id, before, after)
    SELECT %(run_id)s, {entity}, 'insert', room_id, user_id, NULL, after FROM inserted
    UNION ALL
    SELECT %(run_id)s, {entity}, 'update', room_id, user_id, before, after FROM updated
    UNION ALL
    SELECT %(run_id)s, {entity}, 'delete', room_id, user_id, before, NULL FROM deleted
    RETURNING action
)
SELECT count(*) FILTER (WHERE action = 'insert'), count(*) FILTER (WHERE action = 'update'),
       count(*) FILTER (WHERE action = 'delete'),
       (SELECT count(*) FROM (SELECT DISTINCT room_id, user_id FROM todo) AS k)  -- at most one change per key
FROM audited
