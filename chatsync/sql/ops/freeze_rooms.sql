-- Freeze writes on chat rooms under a lease (re-freezing extends it); the chat table's flag follows.
WITH leased AS (
    INSERT INTO {ops}.freezes AS f (room_id, reason, frozen_by, expires_at)
    SELECT r, %(reason)s, %(by)s, clock_timestamp() + make_interval(secs => %(ttl)s)
    FROM unnest(%(rooms)s::{room_key_type}[]) AS r
    ON CONFLICT (room_id) DO UPDATE SET reason = EXCLUDED.reason, frozen_by = EXCLUDED.frozen_by,
                                        expires_at = EXCLUDED.expires_at
    RETURNING room_id, expires_at
)
UPDATE {chat_rooms} AS c SET {writes_frozen} = true, {updated_at} = {now}
FROM leased AS l WHERE c.{room_id} = l.room_id
RETURNING c.{room_id}, l.expires_at
