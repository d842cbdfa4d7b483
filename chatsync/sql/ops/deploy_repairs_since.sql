-- Post-deployment check: runs that changed chat rows since the deployment (what a data rollback undoes).
SELECT run_id, triggered_by, repaired FROM {ops}.runs
WHERE kind = 'check' AND coalesce(repaired, 0) > 0 AND status <> 'rolled_back' AND started_at >= %(since)s
ORDER BY run_id
