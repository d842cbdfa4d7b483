-- Other runs' unresolved findings of the keys this batch changed are resolved by this run too.
-- Only when another run is unsettled (a repair that skipped rows or stopped, a major run, a run
-- not repaired yet), so the usual batch pays nothing for it; their findings are read through
-- the (run, key) index.
UPDATE {ops}.inconsistencies AS i
SET status = 'repaired', resolved_at = clock_timestamp(), resolved_by_run = %(run_id)s
FROM (SELECT DISTINCT room_id, user_id FROM {ops}.repair_audit
      WHERE run_id = %(run_id)s AND entity = {entity}
        AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR room_id >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR room_id < %(room_hi)s)) AS d
WHERE i.run_id = ANY(%(other_runs)s) AND i.resolved_at IS NULL AND i.kind = ANY(%(kinds)s)
  AND i.room_id = d.room_id AND {finding_user_eq_d}
