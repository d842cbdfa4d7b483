-- Lift freezes (given rooms, or every lease past its end when %(expired)s): writes resume.
WITH lifted AS (
    DELETE FROM {ops}.freezes
    WHERE (%(expired)s AND expires_at <= clock_timestamp()) OR (NOT %(expired)s AND room_id = ANY(%(rooms)s::{room_key_type}[]))
    RETURNING room_id, reason, expires_at
), flags AS (
    UPDATE {chat_rooms} AS c SET {writes_frozen} = false, {updated_at} = {now}
    FROM lifted AS l WHERE c.{room_id} = l.room_id
    RETURNING c.{room_id}
)
SELECT l.room_id, l.reason, l.expires_at, l.room_id IN (SELECT {room_id} FROM flags) FROM lifted AS l
