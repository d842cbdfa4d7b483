-- Maintenance: the month's metrics day by day, from the 5-minute buckets.
SELECT date_trunc('day', bucket_start) AS day,
       sum(value) FILTER (WHERE name = 'events_synced') AS events,
       sum(value) FILTER (WHERE name = 'dead_letters') AS dead_letters,
       avg(value) FILTER (WHERE name = 'sync_delay_seconds' AND labels = '{{"stat": "p95"}}') AS delay_p95,
       max(value) FILTER (WHERE name = 'open_inconsistencies') AS open_max
FROM {ops}.metric_buckets
WHERE bucket_start >= %(start)s AND bucket_start < %(end)s
GROUP BY 1 ORDER BY 1
