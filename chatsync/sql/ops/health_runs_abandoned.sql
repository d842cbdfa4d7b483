-- Runs closed as abandoned (their process died) over [start, end), and those still open now.
SELECT (SELECT count(*) FROM {ops}.runs
        WHERE status = 'abandoned' AND finished_at >= %(start)s AND finished_at < %(end)s),
       (SELECT count(*) FROM {ops}.runs WHERE finished_at IS NULL)
