-- The chat participants the Redis cache holds, in room order (streamed for a full resync).
SELECT {room_id}, {user_id}, {role}, {permissions}, {banned}
FROM {chat_participants}
WHERE %(all)s OR {room_id} = ANY(%(rooms)s::{room_key_type}[])
ORDER BY {room_order}, {user_id}
