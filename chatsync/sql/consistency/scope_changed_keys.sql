-- Incremental scope of one entity: keys changed on either side since the watermark, plus the
-- keys of findings still unresolved (so a skipped or blocked repair is retried). {room_changed}
-- is the room side's (r.updated_at >= since), or nothing when the room side has a database of
-- its own: its changed keys are then read there, and its copy's rows are refreshed from them.
-- The chat side's is c.updated_at >= since. A timestamp without time zone is read as UTC in
-- both (the bound watermark converted, so an index on updated_at still serves).
INSERT INTO pg_temp.chatsync_scope_keys (room_id, user_id)
SELECT {room_key} FROM {room} AS r WHERE {room_changed}
UNION
SELECT {chat_key} FROM {chat} AS c WHERE {chat_changed}
UNION
SELECT room_id, user_id FROM {ops}.inconsistencies
WHERE run_id = ANY({unsettled_runs})
  AND resolved_at IS NULL AND kind = ANY(%(kinds)s)
