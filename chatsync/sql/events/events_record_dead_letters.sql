-- Events that cannot be applied, with the reason, the entry as text to read (raw) and exactly as
-- read (raw_entry: field, value, ... as bytes, what XADD takes back); one row per stream entry.
-- Entries differ in length, and a bytea[][] must be rectangular: each row's raw_entry comes as
-- the text of its own bytea[] (chatsync.db.bytea_array_text, NULL when unknown), which the cast
-- turns back into bytes, so the batch stays one statement like the sync log's.
INSERT INTO {ops}.dead_letters (stream_id, event_id, type, reason, raw, raw_entry, worker)
SELECT d.stream_id, d.event_id, d.type, d.reason, d.raw, d.raw_entry::bytea[], %(worker)s
FROM unnest(%(stream_ids)s::text[], %(event_ids)s::text[], %(types)s::text[], %(reasons)s::text[],
            %(raws)s::jsonb[], %(raw_entries)s::text[]) AS d(stream_id, event_id, type, reason, raw, raw_entry)
ON CONFLICT (stream_id) DO NOTHING
