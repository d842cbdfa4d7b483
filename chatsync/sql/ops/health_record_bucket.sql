-- Health: one time bucket's metrics, replaced whole (a rerun of the interval gives the same rows).
INSERT INTO {ops}.metric_buckets (bucket_start, bucket_seconds, name, labels, value)
SELECT %(start)s, %(seconds)s, m.name, m.labels, m.value
FROM unnest(%(names)s::text[], %(labels)s::jsonb[], %(values)s::double precision[]) AS m(name, labels, value)
ON CONFLICT (name, labels, bucket_seconds, bucket_start)
DO UPDATE SET value = EXCLUDED.value, computed_at = clock_timestamp()
