-- Maintenance: events synced over [start, end) by type and outcome, with the redeliveries.
SELECT type, outcome, count(*), coalesce(sum(attempts - 1), 0)::bigint
FROM {ops}.sync_log WHERE processed_at >= %(start)s AND processed_at < %(end)s
GROUP BY 1, 2 ORDER BY 1, 2
