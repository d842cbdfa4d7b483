-- Major-inconsistency procedure: the rooms a run found unresolved inconsistencies in.
SELECT DISTINCT room_id FROM {ops}.inconsistencies WHERE run_id = %(run_id)s AND resolved_at IS NULL ORDER BY 1
