-- Benchmark: what retention keeps of earlier runs (resolved findings, 90 days by default):
-- %(runs)s settled runs of %(per_run)s findings each, over the simulated rooms.
WITH earlier AS (
    INSERT INTO {ops}.runs (scope, triggered_by, status, detect_started_at, finished_at, settled_at)
    SELECT 'full', 'bench history', 'validated', now() - interval '2 days', now() - interval '2 days',
           now() - interval '2 days'
    FROM generate_series(1, %(runs)s)
    RETURNING run_id
)
INSERT INTO {ops}.inconsistencies (run_id, kind, room_id, user_id, chat_digest, detected_at, status,
                                   resolved_at, resolved_by_run)
SELECT e.run_id, 'role_mismatch', 1 + (g::bigint * 7919 + e.run_id) %% %(rooms)s, g, '0',
       now() - interval '2 days', 'repaired', now() - interval '2 days', e.run_id
FROM earlier AS e, generate_series(1, %(per_run)s) AS g
