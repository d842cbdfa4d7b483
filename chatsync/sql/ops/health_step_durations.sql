-- Health: mean and max duration of each pipeline step of the consistency runs started over [start, end).
SELECT d.key, avg(d.value::double precision), max(d.value::double precision), count(*)
FROM {ops}.runs AS r CROSS JOIN LATERAL jsonb_each_text(r.step_durations) AS d
WHERE r.kind = 'check' AND r.scope IN ('full', 'incremental')
  AND r.started_at >= %(start)s AND r.started_at < %(end)s
GROUP BY d.key
