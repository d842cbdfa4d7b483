-- pandas baseline: the room side's participants as the chat side stores them.
SELECT room_id, user_id, role, permissions, banned_at IS NOT NULL AS banned FROM room.room_participants
