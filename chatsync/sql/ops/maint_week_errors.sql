-- Maintenance: the week's dead letters by error class, with the week before for the trend.
SELECT regexp_replace(regexp_replace(reason, '''[^'']*''', '''…''', 'g'), '[0-9]+', 'N', 'g') AS error_class,
       count(*) FILTER (WHERE received_at >= %(start)s) AS this_week,
       count(*) FILTER (WHERE received_at < %(start)s) AS previous_week
FROM {ops}.dead_letters
WHERE received_at >= %(start)s - interval '7 days' AND received_at < %(end)s
GROUP BY 1 ORDER BY 2 DESC, 3 DESC, 1 LIMIT 10
