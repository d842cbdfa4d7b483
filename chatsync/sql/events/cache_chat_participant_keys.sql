-- The chat state of given participant keys for the cache; present = false when the chat row is gone.
SELECT k.room_id, k.user_id, p.{role}, p.{permissions}, p.{banned}, p.{room_id} IS NOT NULL
FROM unnest(%(rooms)s::{room_key_type}[], %(users)s::{user_key_type}[]) AS k(room_id, user_id)
LEFT JOIN {chat_participants} AS p ON p.{room_id} = k.room_id AND p.{user_id} = k.user_id
