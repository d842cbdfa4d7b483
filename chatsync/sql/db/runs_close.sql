-- Close open runs (no finished_at) that will not go on, saying in each run's error what it
-- leaves behind: a detect that never finished has its partial findings removed (a failed detect
-- leaves no partial set behind); repaired rows are audited and can be rolled back.
-- %(run_id)s names one run (its process gives up on it: status 'failed'); NULL closes every run
-- whose process is gone (status 'abandoned'): no session holds the run's advisory lock
-- (chatsync.db.locks.run_key: the base in the high bits, the run id in the low 40) and no lease
-- keeps it alive. Returns each closed run with the state it was left in.
WITH gone AS (
    SELECT r.run_id, r.status
    FROM {ops}.runs AS r
    WHERE r.finished_at IS NULL
      AND CASE WHEN %(run_id)s::bigint IS NOT NULL THEN r.run_id = %(run_id)s::bigint
          ELSE (r.lease_until IS NULL OR r.lease_until < clock_timestamp())
               AND NOT EXISTS (
                   SELECT 1 FROM pg_locks AS l
                   WHERE l.locktype = 'advisory' AND l.objsubid = 1
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                     AND (l.classid::bigint << 32 | l.objid::bigint) = (%(lock_base)s::bigint | r.run_id))
          END
    FOR UPDATE OF r SKIP LOCKED
),
audited AS (
    SELECT a.run_id, count(*) AS rows FROM {ops}.repair_audit AS a
    WHERE a.run_id IN (SELECT run_id FROM gone) GROUP BY a.run_id
),
dropped AS (
    DELETE FROM {ops}.inconsistencies AS i
    USING gone AS g WHERE i.run_id = g.run_id AND g.status = 'running'
    RETURNING i.run_id
)
UPDATE {ops}.runs AS r
SET status = CASE WHEN %(run_id)s::bigint IS NULL THEN 'abandoned' ELSE 'failed' END,
    finished_at = clock_timestamp(),
    error = left(%(why)s || ' (it was ' || g.status || '); ' || CASE
        WHEN g.status = 'running' THEN 'the detect did not finish: its partial findings were removed'
        WHEN coalesce(a.rows, 0) = 0 THEN 'nothing was repaired; its findings stay open for the next pass'
        WHEN g.status = 'repairing' THEN a.rows || ' chat rows were repaired (audited) before it stopped, '
             || 'the rest was not: the next pass repairs what still differs; `chatsync rollback '
             || g.run_id || '` undoes those rows'
        ELSE a.rows || ' chat rows were repaired (audited), never validated: the next pass checks them; '
             || '`chatsync rollback ' || g.run_id || '` undoes them'
        END || coalesce(' (earlier error: ' || r.error || ')', ''), 2000)
FROM gone AS g LEFT JOIN audited AS a ON a.run_id = g.run_id
WHERE r.run_id = g.run_id
RETURNING r.run_id, g.status, coalesce(a.rows, 0), r.triggered_by, r.error
