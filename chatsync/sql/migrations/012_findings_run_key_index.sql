-- Findings are looked up by run and key (the detect's closing of vanished findings, the repair's
-- batches): one index on (run_id, room_id, user_id) answers both with a single probe. With only
-- (run_id, room_id), a room holding many findings (drift concentrated in a few rooms) made every
-- key probe read all of its room's findings, and the planner, before the new findings were
-- analysed, combined the run and key indexes into a bitmap that read the whole run per key
-- (measured at 10M participants: 387 s instead of under a second).
CREATE INDEX IF NOT EXISTS inconsistencies_run_key_idx ON {ops}.inconsistencies (run_id, room_id, user_id);
DROP INDEX IF EXISTS {ops}.inconsistencies_run_room_idx;
-- Like the audit (009), findings are written in bulk (144,000 by one detect at 10M participants)
-- by the only code that creates their runs: the per-row foreign-key check cost ~0.5 s of such a
-- detect. Runs are never deleted by chatsync (retention deletes findings, not runs).
ALTER TABLE {ops}.inconsistencies DROP CONSTRAINT IF EXISTS inconsistencies_run_id_fkey;
