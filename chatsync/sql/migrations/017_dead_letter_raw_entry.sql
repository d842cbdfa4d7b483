-- A dead letter keeps its stream entry exactly as read, so it can be put back on the stream
-- (XADD) once its cause is fixed: `raw` is jsonb, for reading, and cannot hold a NUL byte or
-- bytes that are not UTF-8, the very entries that are refused. Field, value, field, value, ...
-- as bytes; NULL for the rows recorded before.
ALTER TABLE {ops}.dead_letters ADD COLUMN IF NOT EXISTS raw_entry bytea[];
