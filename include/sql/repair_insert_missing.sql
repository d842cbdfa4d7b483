-- Repair, missing chat rows: insert them from the room side, with an audit row each.
-- Re-checked in the statement: the room row must still exist, and a chat row that appeared
-- meanwhile (a concurrent application write) is left alone (ON CONFLICT DO NOTHING).
WITH todo AS (
    SELECT DISTINCT {finding_key}
    FROM {ops}.inconsistencies
    WHERE run_id = %(run_id)s AND status = 'open' AND kind = %(missing_kind)s
      AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
),
inserted AS (
    INSERT INTO {chat} AS c ({insert_columns})
    SELECT {insert_values}
    FROM todo AS t
    JOIN {room} AS r ON {room_eq_todo}
    ORDER BY 1
    ON CONFLICT DO NOTHING
    RETURNING {chat_key_out}, to_jsonb(c) AS after
)
INSERT INTO {ops}.repair_audit (run_id, entity, action, room_id, user_id, before, after)
SELECT %(run_id)s, {entity}, 'insert', room_id, user_id, NULL, after FROM inserted
