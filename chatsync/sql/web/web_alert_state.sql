-- Health page: each alert condition's state.
SELECT condition, firing, since, last_notified_at, value, threshold, message FROM {ops}.alert_state ORDER BY condition
