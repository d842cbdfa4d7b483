-- The repair's write path, measured (chatsync bench): every changed chat row writes one audit
-- row and marks its findings, so both must be cheap.
-- The audit is a ledger: its rows outlive the run record and need no per-row foreign-key check
-- (that check was ~10 % of the repair's time at 1M participants).
ALTER TABLE {ops}.repair_audit DROP CONSTRAINT IF EXISTS repair_audit_run_id_fkey;
-- Marking a finding repaired sets status/resolved_at/resolved_by_run. With no index on those
-- columns (not even in a predicate) and room on each page for a second version of every row
-- (a repair marks nearly all of a run's findings in one transaction, so nothing is pruned in
-- between), the update is HOT: one heap record, no index entries.
DROP INDEX IF EXISTS {ops}.inconsistencies_open_key_idx;
CREATE INDEX IF NOT EXISTS inconsistencies_key_idx ON {ops}.inconsistencies (room_id, user_id);
ALTER TABLE {ops}.inconsistencies SET (fillfactor = 45);
