-- The statement trigger that keeps one side's per-room fingerprints current: the net change of
-- the statement per key (+1 and the hash of each new row, -1 and the hash of each old row)
-- appended to the delta log. An UPDATE that leaves the compared values alone nets to zero and
-- writes nothing. SECURITY DEFINER: the application's role writes the table, not the ops schema.
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $chatsync$
BEGIN
    INSERT INTO {ops}.room_fingerprint_deltas (entity, side, room_id, user_id, row_count, hash)
    SELECT {entity}, {side}, room_id, user_id, sum(n), bit_xor(h)
    FROM ({changes}) AS d
    GROUP BY room_id, user_id
    HAVING sum(n) <> 0 OR bit_xor(h) <> 0;
    RETURN NULL;
END
$chatsync$
