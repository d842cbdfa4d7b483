-- Rollback: re-insert the rows the run deleted, unless a row with that key exists again.
WITH undone AS (
    INSERT INTO {chat} AS c ({all_columns})
    SELECT {all_from_p}
    FROM {ops}.repair_audit AS a
    CROSS JOIN LATERAL jsonb_populate_record(NULL::{chat}, a.before) AS p
    WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.action = 'delete'
      AND a.rolled_back_by IS NULL
    ON CONFLICT DO NOTHING
    RETURNING {chat_key_out}, to_jsonb(c) AS after
),
audited AS (
    INSERT INTO {ops}.repair_audit (run_id, entity, action, room_id, user_id, before, after)
    SELECT %(rb_id)s, {entity}, 'insert', room_id, user_id, NULL, after FROM undone
)
UPDATE {ops}.repair_audit AS a SET rolled_back_by = %(rb_id)s
FROM undone AS u
WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.action = 'delete'
  AND a.room_id = u.room_id AND {audit_user_eq_u}
