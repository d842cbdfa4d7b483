-- Rollback: delete the rows the run inserted, if untouched since.
WITH undone AS (
    DELETE FROM {chat} AS c
    USING {ops}.repair_audit AS a
    WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.action = 'insert'
      AND a.rolled_back_by IS NULL AND {chat_key_eq_audit} AND to_jsonb(c) = a.after
    RETURNING {chat_key_out}, to_jsonb(c) AS before
),
audited AS (
    INSERT INTO {ops}.repair_audit (run_id, entity, action, room_id, user_id, before, after)
    SELECT %(rb_id)s, {entity}, 'delete', room_id, user_id, before, NULL FROM undone
)
UPDATE {ops}.repair_audit AS a SET rolled_back_by = %(rb_id)s
FROM undone AS u  -- a run changes a key once: its audit row is found by run and key
WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.action = 'insert'
  AND a.room_id = u.room_id AND {audit_user_eq_u}
