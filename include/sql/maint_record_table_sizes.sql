-- Maintenance: the size of each given table now, recorded under the run's interval (a rerun updates it).
INSERT INTO {ops}.table_sizes AS s (kind, interval_start, table_name, bytes, row_estimate)
SELECT %(kind)s, %(start)s, t.name, pg_total_relation_size(t.name::regclass),
       greatest((SELECT reltuples FROM pg_class WHERE oid = t.name::regclass), 0)::bigint
FROM unnest(%(tables)s::text[]) AS t(name)
ON CONFLICT (kind, interval_start, table_name)
DO UPDATE SET bytes = EXCLUDED.bytes, row_estimate = EXCLUDED.row_estimate, measured_at = clock_timestamp()
