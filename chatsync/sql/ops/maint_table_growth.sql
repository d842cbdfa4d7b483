-- Maintenance: every size measured so far, per table in time order (growth and projected size).
SELECT table_name, measured_at, bytes, row_estimate FROM {ops}.table_sizes ORDER BY table_name, measured_at
