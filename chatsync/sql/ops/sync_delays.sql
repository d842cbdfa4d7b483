-- The event sync's figures from the sync log, over [start, end) and/or one worker (NULL: any):
-- events, applied, sync delay (processed - occurred) percentiles and max, the processing span,
-- redeliveries. The health page, maintenance, the event benchmark and the demo all read this.
SELECT count(*),
       count(*) FILTER (WHERE outcome = 'applied'),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - occurred_at)),
       max(extract(epoch FROM processed_at - occurred_at)),
       extract(epoch FROM max(processed_at) - min(processed_at)),
       coalesce(sum(attempts - 1), 0)
FROM {ops}.sync_log
WHERE (%(start)s::timestamptz IS NULL OR processed_at >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR processed_at < %(end)s)
  AND (%(worker)s::text IS NULL OR worker = %(worker)s)
