-- Rollback: put back the before-image of the rows the run updated, if untouched since.
WITH undone AS (
    UPDATE {chat} AS c
    SET ({all_columns}) = (SELECT {all_from_p} FROM jsonb_populate_record(NULL::{chat}, a.before) AS p)
    FROM {ops}.repair_audit AS a
    WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.action = 'update'
      AND a.rolled_back_by IS NULL AND {chat_key_eq_audit} AND to_jsonb(c) = a.after
    RETURNING {chat_key_out}, a.after AS before, to_jsonb(c) AS after
),
audited AS (
    INSERT INTO {ops}.repair_audit (run_id, entity, action, room_id, user_id, before, after)
    SELECT %(rb_id)s, {entity}, 'update', room_id, user_id, before, after FROM undone
)
UPDATE {ops}.repair_audit AS a SET rolled_back_by = %(rb_id)s
FROM undone AS u  -- a run changes a key once: its audit row is found by run and key
WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.action = 'update'
  AND a.room_id = u.room_id AND {audit_user_eq_u}
