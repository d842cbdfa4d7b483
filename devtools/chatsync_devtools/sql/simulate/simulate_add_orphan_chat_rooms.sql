-- Drift, orphan_chat_room: <n> chat rooms, each with 1 to <max_participants> participants,
-- for room ids the room side does not have (the room was deleted and the chat side never heard
-- of it). Their ids follow the room side's last one. Each participant is an orphan_participant.
WITH ghosts AS (
    SELECT %(first_id)s::bigint + g - 1 AS id
    FROM generate_series(1, %(n)s::bigint) AS g
    WHERE NOT EXISTS (SELECT 1 FROM {rr} AS r WHERE r.{rr_id} = %(first_id)s::bigint + g - 1)
),
added_rooms AS (
    INSERT INTO {cr} AS c ({cr_room_id}, {cr_status}, {cr_is_public}, {cr_chat_enabled}, {cr_archived},
                           {cr_writes_frozen}, {cr_updated_at})
    SELECT id,
           (%(status_values)s::text[])[width_bucket(pg_temp.sim_unit(%(seed)s, 'drift.orphan_room.status', id),
                                                    %(status_bounds)s::float8[])],
           true, true, false, false, now()
    FROM ghosts
    ON CONFLICT DO NOTHING
    RETURNING c.{cr_room_id} AS room_id
),
added_participants AS (
    INSERT INTO {cp} AS c ({cp_room_id}, {cp_user_id}, {cp_role}, {cp_permissions}, {cp_banned}, {cp_updated_at})
    SELECT a.room_id,
           -- seats of one room step through a prime pool: never the same user twice
           1 + mod(pg_temp.sim_int(%(seed)s, 'drift.orphan_room.user_start', %(pool)s, a.room_id)
                   + s.seat * (1 + pg_temp.sim_int(%(seed)s, 'drift.orphan_room.user_step', %(pool)s - 1, a.room_id)),
                   %(pool)s),
           CASE WHEN s.seat = 1 THEN %(owner_role)s ELSE %(member_role)s END,
           CASE WHEN s.seat = 1 THEN %(owner_mask)s::bigint ELSE %(member_mask)s::bigint END,
           false, now()
    FROM added_rooms AS a
    CROSS JOIN LATERAL generate_series(
        1, 1 + pg_temp.sim_int(%(seed)s, 'drift.orphan_room.size', %(max_participants)s, a.room_id)) AS s(seat)
    ON CONFLICT DO NOTHING
    RETURNING c.{cp_room_id} AS room_id, c.{cp_user_id} AS user_id
)
INSERT INTO pg_temp.chatsync_sim_changes (kind, room_id, user_id)
SELECT %(room_kind)s, room_id, NULL FROM added_rooms
UNION ALL
SELECT %(participant_kind)s, room_id, user_id FROM added_participants
