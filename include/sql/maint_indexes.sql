-- Maintenance: the indexes of the given tables with their size, use and definition, for the
-- bloat, unused and duplicate checks.
SELECT n.nspname || '.' || c.relname AS index_name, t.relname AS table_name, i.indisunique, i.indisprimary,
       pg_relation_size(c.oid) AS bytes, coalesce(s.idx_scan, 0) AS scans, am.amname,
       i.indrelid::regclass::text || ' ' || i.indkey::text || ' ' || coalesce(pg_get_expr(i.indexprs, i.indrelid), '')
           || ' ' || coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS signature
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_class AS t ON t.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_am AS am ON am.oid = c.relam
LEFT JOIN pg_stat_user_indexes AS s ON s.indexrelid = i.indexrelid
WHERE i.indrelid = ANY(%(tables)s::regclass[])
ORDER BY 1
