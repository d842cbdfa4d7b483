-- Maintenance: sync delay percentiles over [start, end).
SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM processed_at - occurred_at))
FROM {ops}.sync_log WHERE processed_at >= %(start)s AND processed_at < %(end)s
