-- Events that cannot be applied, with the reason and the raw entry; one row per stream entry.
INSERT INTO {ops}.dead_letters (stream_id, event_id, type, reason, raw, worker)
SELECT d.stream_id, d.event_id, d.type, d.reason, d.raw, %(worker)s
FROM unnest(%(stream_ids)s::text[], %(event_ids)s::text[], %(types)s::text[], %(reasons)s::text[],
            %(raws)s::jsonb[]) AS d(stream_id, event_id, type, reason, raw)
ON CONFLICT (stream_id) DO NOTHING
