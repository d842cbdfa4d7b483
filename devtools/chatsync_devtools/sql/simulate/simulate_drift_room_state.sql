-- Drift, room_state_mismatch: <n> rooms present on both sides whose chat copy missed a state
-- change. The k-th pick (seed-hash order) gets pattern k mod 4: 0 status lags, 1 is_public
-- flipped, 2 archive event lost (archived flipped and status lags: two columns, one finding),
-- 3 chat_enabled flipped. What is recorded is whether the updated row really differs from its
-- room row by the rules (still_differs).
WITH picked AS (
    SELECT c.{cr_room_id} AS room_id, pg_temp.sim_hash(%(seed)s, 'drift.room_state', c.{cr_room_id}) AS h
    FROM {cr} AS c
    JOIN {rr} AS r ON r.{rr_id} = c.{cr_room_id}
    ORDER BY h
    LIMIT %(n)s
),
numbered AS (
    SELECT room_id, mod(row_number() OVER (ORDER BY h) - 1, 4) AS pattern FROM picked
),
drifted AS (
    UPDATE {cr} AS c
    SET {cr_status} = CASE WHEN n.pattern IN (0, 2)
            THEN (array_remove(%(status_values)s::text[], c.{cr_status}))[1 + pg_temp.sim_int(
                     %(seed)s, 'drift.room_state.status',
                     cardinality(array_remove(%(status_values)s::text[], c.{cr_status})), n.room_id)]
            ELSE c.{cr_status} END,
        {cr_is_public} = CASE WHEN n.pattern = 1 THEN NOT c.{cr_is_public} ELSE c.{cr_is_public} END,
        {cr_archived} = CASE WHEN n.pattern = 2 THEN NOT c.{cr_archived} ELSE c.{cr_archived} END,
        {cr_chat_enabled} = CASE WHEN n.pattern = 3 THEN NOT c.{cr_chat_enabled} ELSE c.{cr_chat_enabled} END,
        {cr_updated_at} = now()
    FROM numbered AS n
    JOIN {rr} AS r ON r.{rr_id} = n.room_id
    WHERE c.{cr_room_id} = n.room_id
    RETURNING c.{cr_room_id} AS room_id, ({still_differs}) AS differs
)
INSERT INTO pg_temp.chatsync_sim_changes (kind, room_id, user_id)
SELECT %(kind)s, room_id, NULL FROM drifted WHERE differs
