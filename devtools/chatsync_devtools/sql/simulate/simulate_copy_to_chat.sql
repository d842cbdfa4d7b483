-- Simulator, chat side: start as an exact copy of the room side, per the rules (the column
-- lists and the derived values come from chatsync.model.rules through the mapping).
WITH copied_rooms AS (
    INSERT INTO {cr} ({room_columns})
    SELECT {room_values} FROM {rr} AS r
    RETURNING 1
)
INSERT INTO {cp} ({participant_columns})
SELECT {participant_values} FROM {rp} AS r
