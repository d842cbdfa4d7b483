-- The findings of a batch its repair statement did not mark: their row changed since detection
-- or no longer differs. Left for the next run, which sees them again from their new state.
UPDATE {ops}.inconsistencies
SET status = 'skipped'
WHERE run_id = %(run_id)s AND status = 'open' AND kind = ANY(%(kinds)s)
  AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
