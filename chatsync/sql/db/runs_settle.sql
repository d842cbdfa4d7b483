-- Settle the runs that have finished detecting and no longer have an unresolved finding:
-- repaired, closed by a later run as vanished, or none found (the detecting run itself, once its
-- findings are in). Each check reads one run's findings through the (run, key) index and stops at
-- the first unresolved one; a run still detecting ('running') is never settled.
UPDATE {ops}.runs AS r SET settled_at = clock_timestamp()
WHERE r.settled_at IS NULL AND r.status <> 'running'
  AND NOT EXISTS (SELECT 1 FROM {ops}.inconsistencies AS i WHERE i.run_id = r.run_id AND i.resolved_at IS NULL)
