-- Health page: the latest consistency runs.
SELECT run_id, kind, scope, status, triggered_by, started_at, finished_at,
       (SELECT coalesce(sum(value::bigint), 0)::bigint FROM jsonb_each_text(counts)) AS found, repaired, error
FROM {ops}.runs
WHERE triggered_by NOT LIKE 'worker:%%'
ORDER BY run_id DESC LIMIT %(limit)s
