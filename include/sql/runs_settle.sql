-- Settle the runs (other than the one detecting) that have finished detecting and no longer have
-- an unresolved finding: repaired, closed by a later run as vanished, or none found. Each check
-- reads one run's findings through the (run, key) index and stops at the first unresolved one.
UPDATE {ops}.runs AS r SET settled_at = clock_timestamp()
WHERE r.settled_at IS NULL AND r.status <> 'running' AND r.run_id <> %(run_id)s
  AND NOT EXISTS (SELECT 1 FROM {ops}.inconsistencies AS i WHERE i.run_id = r.run_id AND i.resolved_at IS NULL)
