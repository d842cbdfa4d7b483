-- The findings of a batch whose row its repair statement left alone (changed since detection, or
-- no longer differing): marked repaired as the statement read them, they are skipped instead,
-- still unresolved. The next run sees those rows again from their new state. A finding repaired
-- by an earlier attempt at this run (a resumed repair) has its audit row and stays repaired.
UPDATE {ops}.inconsistencies AS i
SET status = 'skipped', resolved_at = NULL, resolved_by_run = NULL
WHERE i.run_id = %(run_id)s AND i.status = 'repaired' AND i.resolved_by_run = %(run_id)s
  AND i.kind = ANY(%(kinds)s) AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR i.room_id >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR i.room_id < %(room_hi)s)
  AND {is_entity_finding_i}
  AND NOT EXISTS (
      SELECT 1 FROM {ops}.repair_audit AS a
      WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.room_id = i.room_id
        AND {audit_user_eq_i})
