-- The findings of a batch whose room row holds a value outside its field's domain (the mapping's
-- domains:): repair_batch.sql left their chat row alone, so they are held back. Marked repaired
-- as that statement read them, they are open again (the chat side was not changed: the next run
-- finds the key again), and each such room value is recorded in room_domain_violations, once per
-- run, key and field (a resumed repair holds the same keys back again). Runs only when fewer rows
-- changed than the batch's findings name, before repair_mark_skipped.sql marks the rest skipped.
-- Returns the keys held back and one row per value recorded.
WITH held AS (
    UPDATE {ops}.inconsistencies AS i
    SET status = 'open', resolved_at = NULL, resolved_by_run = NULL
    FROM {room} AS r
    LEFT JOIN {chat} AS c ON {room_eq_c}
    WHERE i.run_id = %(run_id)s AND i.status = 'repaired' AND i.resolved_by_run = %(run_id)s
      AND i.kind = ANY(%(kinds)s)
      AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR i.room_id >= %(room_lo)s)
      AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR i.room_id < %(room_hi)s)
      AND {is_entity_finding_i}
      AND {room_eq_i}
      AND ({held_back})
      AND NOT EXISTS (
          SELECT 1 FROM {ops}.repair_audit AS a
          WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.room_id = i.room_id
            AND {audit_user_eq_i})
    RETURNING i.room_id, i.user_id
),
keys AS (
    SELECT DISTINCT room_id, user_id FROM held
),
recorded AS (
    INSERT INTO {ops}.room_domain_violations (run_id, entity, room_id, user_id, field, value)
    SELECT %(run_id)s, {entity}, k.room_id, k.user_id, v.field, v.value
    FROM keys AS k
    JOIN {room} AS r ON {room_eq_k}
    LEFT JOIN {chat} AS c ON {room_eq_c}
    CROSS JOIN LATERAL (VALUES {violations}) AS v (field, value, outside)
    WHERE v.outside
      AND NOT EXISTS (
          SELECT 1 FROM {ops}.room_domain_violations AS d
          WHERE d.run_id = %(run_id)s AND d.entity = {entity} AND d.room_id = k.room_id
            AND {violation_user_eq_k} AND d.field = v.field)
    RETURNING field, value, room_id, user_id
)
SELECT (SELECT count(*) FROM keys), v.field, v.value, v.room_id, v.user_id
FROM (SELECT 1) AS one
LEFT JOIN recorded AS v ON TRUE
ORDER BY v.room_id, v.user_id, v.field
