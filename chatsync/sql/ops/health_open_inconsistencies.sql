-- Health: inconsistencies still unresolved now, by kind (each key and kind once, whatever the runs).
SELECT kind, count(*) FROM (
    SELECT DISTINCT kind, room_id, user_id FROM {ops}.inconsistencies
    WHERE run_id = ANY({unsettled_runs}) AND resolved_at IS NULL
) AS open_keys
GROUP BY kind
