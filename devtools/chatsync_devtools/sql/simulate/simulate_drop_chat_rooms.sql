-- Drift, missing_chat_room: <n> rooms, among the smallest (at most <small_room> participants
-- when there are enough), whose chat room was never created: think just-created rooms whose
-- creation event was lost. Their chat participants go too, each one a missing_participant.
WITH picked AS (
    SELECT id
    FROM pg_temp.chatsync_sim_rooms
    ORDER BY GREATEST(size, %(small_room)s), pg_temp.sim_hash(%(seed)s, 'drift.missing_chat_room', id)
    LIMIT %(n)s
),
gone_rooms AS (
    DELETE FROM {cr} AS c USING picked AS p
    WHERE c.{cr_room_id} = p.id
    RETURNING c.{cr_room_id} AS room_id
),
gone_participants AS (
    DELETE FROM {cp} AS c USING picked AS p
    WHERE c.{cp_room_id} = p.id
    RETURNING c.{cp_room_id} AS room_id, c.{cp_user_id} AS user_id
)
INSERT INTO pg_temp.chatsync_sim_changes (kind, room_id, user_id)
SELECT %(room_kind)s, room_id, NULL FROM gone_rooms
UNION ALL
SELECT %(participant_kind)s, room_id, user_id FROM gone_participants
