-- Benchmark floor: read both participant tables once, nothing compared.
SELECT (SELECT count(*) FROM room.room_participants) + (SELECT count(*) FROM chat.chat_participants)
