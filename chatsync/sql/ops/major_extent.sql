-- Major-inconsistency procedure: per room and kind, how many keys differ now and since when
-- (the first detection of any of them by any run still unresolved).
SELECT n.room_id, n.kind, count(*) AS keys,
       (SELECT min(o.detected_at) FROM {ops}.inconsistencies AS o
        WHERE o.run_id = ANY({unsettled_runs})
          AND o.room_id = n.room_id AND o.kind = n.kind AND o.resolved_at IS NULL) AS since
FROM {ops}.inconsistencies AS n WHERE n.run_id = %(run_id)s
GROUP BY n.room_id, n.kind ORDER BY n.room_id, n.kind
