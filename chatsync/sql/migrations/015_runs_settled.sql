-- A run is settled once none of its findings is unresolved. Whatever looks for unresolved
-- findings (the next detect closing those that vanished, the incremental and keyed scopes,
-- health, maintenance) reads only the unsettled runs' findings through the (run, key) index
-- instead of the whole history: with 5M resolved findings kept (retention) a full detect at 1M
-- participants took 1.2 s instead of 0.34 s, two scans of the findings table for 0.8 s of it.
-- An index on the findings' resolved_at would do the same but make marking them not HOT.
ALTER TABLE {ops}.runs ADD COLUMN IF NOT EXISTS settled_at timestamptz;
UPDATE {ops}.runs AS r SET settled_at = clock_timestamp()
WHERE r.settled_at IS NULL AND r.status <> 'running'
  AND NOT EXISTS (SELECT 1 FROM {ops}.inconsistencies AS i WHERE i.run_id = r.run_id AND i.resolved_at IS NULL);
CREATE INDEX IF NOT EXISTS runs_unsettled_idx ON {ops}.runs (run_id) WHERE settled_at IS NULL;
-- Every lookup of findings by key now goes through an unsettled run, so the (run, key) index
-- serves them and the (key) index over the whole history goes: one index entry less per finding
-- written (a keyed detect at 10M participants: 6 % faster), and the repair's key probes stay in
-- the few open runs instead of descending an index of every finding kept.
DROP INDEX IF EXISTS {ops}.inconsistencies_key_idx;
