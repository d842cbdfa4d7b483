-- Health page: one metric's series from the buckets since a time, summed or averaged per step.
SELECT date_bin(%(step)s::interval, bucket_start, '2000-01-01'::timestamptz) AS t,
       CASE WHEN %(agg)s = 'sum' THEN sum(value) ELSE avg(value) END
FROM {ops}.metric_buckets
WHERE name = %(name)s AND labels = %(labels)s::jsonb AND bucket_start >= %(since)s AND value IS NOT NULL
GROUP BY 1 ORDER BY 1
