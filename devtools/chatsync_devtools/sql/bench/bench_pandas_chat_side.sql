-- pandas baseline: the chat side's participants.
SELECT room_id, user_id, role, permissions, banned FROM chat.chat_participants
