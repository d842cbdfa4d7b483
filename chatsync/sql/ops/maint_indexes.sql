-- Maintenance: the indexes of the given tables with their size, use and definition, for the
-- bloat, unused and duplicate checks. Names are quote_ident'ed: usable as regclass input.
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS index_name, t.relname AS table_name,
       i.indisunique, i.indisprimary,
       pg_relation_size(c.oid) AS bytes, coalesce(s.idx_scan, 0) AS scans, am.amname,
       i.indrelid::regclass::text || ' ' || i.indkey::text || ' ' || coalesce(pg_get_expr(i.indexprs, i.indrelid), '')
           || ' ' || coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS signature,
       n.nspname, c.relname
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_class AS t ON t.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_am AS am ON am.oid = c.relam
LEFT JOIN pg_stat_user_indexes AS s ON s.indexrelid = i.indexrelid
WHERE i.indrelid IN (SELECT tc.oid FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(s, n)
                     JOIN pg_namespace AS tn ON tn.nspname = w.s
                     JOIN pg_class AS tc ON tc.relnamespace = tn.oid AND tc.relname = w.n)
ORDER BY 1
