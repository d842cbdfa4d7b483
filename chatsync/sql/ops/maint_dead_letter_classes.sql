-- Maintenance: dead letters over [start, end) by event type and error class (the reason with its
-- quoted values and numbers blanked, so one class covers every event it hit).
SELECT coalesce(type, '(none)') AS type,
       regexp_replace(regexp_replace(reason, '''[^'']*''', '''…''', 'g'), '[0-9]+', 'N', 'g') AS error_class,
       count(*)
FROM {ops}.dead_letters
WHERE received_at >= %(start)s AND received_at < %(end)s
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
