-- Drift, orphan_participant: <n> chat rows for users the room does not have (a removal event
-- was lost), in rooms that exist on both sides. Each draws up to 8 candidate users and keeps
-- the first one that is not a participant of that room.
WITH eligible AS (
    SELECT array_agg(c.{cr_room_id} ORDER BY c.{cr_room_id}) AS ids
    FROM {cr} AS c
    JOIN {rr} AS r ON r.{rr_id} = c.{cr_room_id}
),
wanted AS MATERIALIZED (  -- computed once: indexing a big array per candidate row is slow
    SELECT g, e.ids[1 + pg_temp.sim_int(%(seed)s, 'drift.orphan_participant.room', cardinality(e.ids), g)] AS room_id
    FROM eligible AS e
    CROSS JOIN generate_series(1, %(n)s::bigint) AS g
    WHERE cardinality(e.ids) > 0
),
chosen AS (
    SELECT DISTINCT ON (w.g) w.room_id, u.user_id
    FROM wanted AS w
    CROSS JOIN LATERAL (
        SELECT k, 1 + pg_temp.sim_int(%(seed)s, 'drift.orphan_participant.user', %(pool)s, w.g, k) AS user_id
        FROM generate_series(0, 7) AS k
    ) AS u
    WHERE NOT EXISTS (SELECT 1 FROM {rp} AS r
                      WHERE r.{rp_room_id} = w.room_id AND r.{rp_user_id} = u.user_id)
    ORDER BY w.g, u.k
),
added AS (
    INSERT INTO {cp} AS c ({cp_room_id}, {cp_user_id}, {cp_role}, {cp_permissions}, {cp_banned}, {cp_updated_at})
    SELECT room_id, user_id, %(role)s, %(mask)s, false, now()
    FROM chosen
    ORDER BY room_id, user_id
    ON CONFLICT DO NOTHING
    RETURNING c.{cp_room_id} AS room_id, c.{cp_user_id} AS user_id
)
INSERT INTO pg_temp.chatsync_sim_changes (kind, room_id, user_id)
SELECT %(kind)s, room_id, user_id FROM added
