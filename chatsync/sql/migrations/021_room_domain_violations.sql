-- Room values outside their field's domain (the mapping's domains:) that a repair held back: the
-- chat row was left as it was and the finding open, and the value is reported here (the run's
-- result, the daily maintenance report) as the room side's data-quality problem it is.
-- One row per held-back (run, key, field); value is the room value as text, as the room gives it.
-- A ledger like the audit: no foreign key to runs; retention deletes its old rows.
CREATE TABLE IF NOT EXISTS {ops}.room_domain_violations (
    run_id      bigint NOT NULL,
    entity      text NOT NULL,            -- room | participant
    room_id     bigint NOT NULL,
    user_id     bigint,                   -- NULL for room-level fields
    field       text NOT NULL,            -- the field's logical name (status, role, permissions, ...)
    value       text,
    detected_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- a run's values (its result, a resumed repair's check for those recorded already), by key
CREATE INDEX IF NOT EXISTS room_domain_violations_run_key_idx
    ON {ops}.room_domain_violations (run_id, room_id, user_id);
-- the daily report counts them over its interval, retention deletes the old ones
CREATE INDEX IF NOT EXISTS room_domain_violations_detected_idx ON {ops}.room_domain_violations (detected_at);
