-- Demo: how the events of this demo run fared (sync delay = processed - occurred).
SELECT count(*), count(*) FILTER (WHERE outcome = 'applied'),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - occurred_at))
FROM {ops}.sync_log WHERE worker = %(worker)s AND processed_at >= %(since)s
