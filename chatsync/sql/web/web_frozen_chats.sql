-- Health page: chat rooms whose writes are frozen (the major-inconsistency procedure).
SELECT {room_id}, {updated_at} FROM {chat_rooms} WHERE {writes_frozen} ORDER BY {room_id} LIMIT %(limit)s
