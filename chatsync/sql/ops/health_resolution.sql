-- Health: time to resolution (first detection -> repaired or found gone) of what was resolved over [start, end).
SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds), max(seconds)
FROM {ops}.resolution_times
WHERE resolved_at >= %(start)s AND resolved_at < %(end)s
