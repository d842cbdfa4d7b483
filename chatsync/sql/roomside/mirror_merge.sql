-- Apply a staged part of the room side to its copy, in the caller's transaction: rows of the
-- part that the room side no longer has are deleted, the others inserted or updated (a row the
-- copy already holds as it is stays untouched, not even locked: no write, no log, and the
-- copy's triggers see only real changes). {in_part} restricts an alias m to the refreshed part.
WITH gone AS (
    DELETE FROM {mirror} AS m
    WHERE {in_part}
      AND NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE {stage_eq_m})
    RETURNING 1
), written AS (
    INSERT INTO {mirror} AS m ({columns})
    SELECT {columns} FROM {stage} AS s
    WHERE NOT EXISTS (SELECT 1 FROM {mirror} AS m
                      WHERE {stage_eq_m} AND ({m_columns}) IS NOT DISTINCT FROM ({s_columns}))
    ORDER BY {keys}
    ON CONFLICT ({keys}) DO UPDATE SET {set_excluded}
    WHERE ({m_columns}) IS DISTINCT FROM ({excluded_columns})
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM written)
