-- After a repair batch: findings whose row the run changed are repaired (with any earlier
-- unresolved finding of the same key and kind); the batch's other findings are skipped (the row
-- changed meanwhile or no longer differed) and stay unresolved for the next run.
WITH changed AS (
    SELECT DISTINCT room_id, user_id FROM {ops}.repair_audit
    WHERE run_id = %(run_id)s AND entity = {entity}
      AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
),
repaired AS (
    UPDATE {ops}.inconsistencies AS i
    SET status = 'repaired', resolved_at = clock_timestamp(), resolved_by_run = %(run_id)s
    FROM changed AS d
    WHERE i.resolved_at IS NULL AND i.kind = ANY(%(kinds)s)
      AND i.room_id = d.room_id AND i.user_id IS NOT DISTINCT FROM d.user_id
    RETURNING i.id
)
UPDATE {ops}.inconsistencies
SET status = 'skipped'
WHERE run_id = %(run_id)s AND status = 'open' AND kind = ANY(%(kinds)s)
  AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
  AND id NOT IN (SELECT id FROM repaired)
