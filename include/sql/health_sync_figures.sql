-- Health: the event road over [start, end): events synced, dead letters, sync delay percentiles.
SELECT count(*),
       count(*) FILTER (WHERE outcome = 'applied'),
       (SELECT count(*) FROM {ops}.dead_letters WHERE received_at >= %(start)s AND received_at < %(end)s),
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - occurred_at)),
       max(extract(epoch FROM processed_at - occurred_at)),
       coalesce(sum(attempts - 1), 0)
FROM {ops}.sync_log
WHERE processed_at >= %(start)s AND processed_at < %(end)s
