-- Earlier unresolved findings inside this run's scope that this run no longer finds were fixed
-- by something else (the application, an event, an operator): close them.
UPDATE {ops}.inconsistencies AS o
SET status = 'resolved', resolved_at = clock_timestamp(), resolved_by_run = %(run_id)s
WHERE o.run_id = ANY({unsettled_runs})  -- through the (run, key) index
  AND o.resolved_at IS NULL
  AND o.run_id <> %(run_id)s
  AND o.kind = ANY(%(kinds)s)
  AND {in_scope}
  AND NOT EXISTS (
      SELECT 1 FROM {ops}.inconsistencies AS n
      WHERE n.run_id = %(run_id)s AND n.kind = o.kind AND n.room_id = o.room_id
        AND {same_user})
