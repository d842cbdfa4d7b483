-- Maintenance: the size of each given table now, recorded under the run's interval (a rerun updates it).
INSERT INTO {ops}.table_sizes AS s (kind, interval_start, table_name, bytes, row_estimate)
SELECT %(kind)s, %(start)s, quote_ident(w.s) || '.' || quote_ident(w.n), pg_total_relation_size(c.oid),
       greatest(c.reltuples, 0)::bigint
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(s, n)
JOIN pg_namespace AS ns ON ns.nspname = w.s
JOIN pg_class AS c ON c.relnamespace = ns.oid AND c.relname = w.n
ON CONFLICT (kind, interval_start, table_name)
DO UPDATE SET bytes = EXCLUDED.bytes, row_estimate = EXCLUDED.row_estimate, measured_at = clock_timestamp()
