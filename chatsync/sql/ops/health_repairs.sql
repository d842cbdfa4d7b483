-- Health: chat rows repaired over [start, end), by action.
SELECT action, count(*) FROM {ops}.repair_audit
WHERE changed_at >= %(start)s AND changed_at < %(end)s
GROUP BY action
