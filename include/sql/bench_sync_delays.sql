-- Event benchmark: sync delay (processed - occurred) percentiles and throughput of a worker's events.
SELECT count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM processed_at - occurred_at)),
       max(extract(epoch FROM processed_at - occurred_at)),
       extract(epoch FROM max(processed_at) - min(processed_at))
FROM {ops}.sync_log WHERE worker = %(worker)s
