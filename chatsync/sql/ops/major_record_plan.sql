-- Major-inconsistency procedure: the plan of a run (a rerun rewrites it).
INSERT INTO {ops}.correction_plans AS p (run_id, room_id, kind, keys, action)
SELECT %(run_id)s, room_id, kind, count(*),
       CASE WHEN kind = ANY(%(insert_kinds)s) THEN 'insert' WHEN kind = ANY(%(delete_kinds)s) THEN 'delete'
            ELSE 'update' END
FROM {ops}.inconsistencies WHERE run_id = %(run_id)s
GROUP BY room_id, kind
ON CONFLICT (run_id, room_id, kind) DO UPDATE SET keys = EXCLUDED.keys, planned_at = clock_timestamp()
