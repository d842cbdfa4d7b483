-- Time to resolution of the inconsistencies a run resolved (see the resolution_times view).
SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds), max(seconds)
FROM {ops}.resolution_times
WHERE resolved_by_run = %(run_id)s
