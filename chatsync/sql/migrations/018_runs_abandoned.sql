-- A run left open by a process that died (killed, its host lost) is closed as 'abandoned' by the
-- next pass, which tells such a run by its lock: every process working on a run holds the run's
-- advisory lock (chatsync.db.locks). A run created inside an Airflow task outlives that task's
-- process (the next task carries it on), so it also counts as alive until lease_until: the end of
-- its DAG run's dagrun_timeout.
ALTER TABLE {ops}.runs ADD COLUMN IF NOT EXISTS lease_until timestamptz;
ALTER TABLE {ops}.runs DROP CONSTRAINT IF EXISTS runs_status_known;
ALTER TABLE {ops}.runs ADD CONSTRAINT runs_status_known CHECK (status IN (
    'running', 'detected', 'consistent', 'repairing', 'repaired', 'validated',
    'validation_failed', 'major', 'failed', 'rolled_back', 'abandoned'));
-- The open runs (a handful), read by every pass looking for abandoned ones.
CREATE INDEX IF NOT EXISTS runs_open_idx ON {ops}.runs (run_id) WHERE finished_at IS NULL;
