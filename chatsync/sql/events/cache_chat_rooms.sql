-- The chat rooms whose state the Redis cache holds (all of them, or the ids given).
SELECT {room_id}, {status}, {is_public}, {chat_enabled}, {archived}, {writes_frozen}
FROM {chat_rooms}
WHERE %(all)s OR {room_id} = ANY(%(rooms)s::{room_key_type}[])
ORDER BY {room_order}
