-- Maintenance: one bounded batch of a retention delete (short transactions, no long lock).
DELETE FROM {table}
WHERE ctid = ANY(ARRAY(SELECT a.ctid FROM {table} AS a WHERE {condition} LIMIT %(batch)s))
