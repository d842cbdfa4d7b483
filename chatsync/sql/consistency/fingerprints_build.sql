-- The baseline: one entity's fingerprints hashed from both tables (run while the new triggers'
-- lock holds writes back, so no change falls between the baseline and the delta log).
-- {room_side} and {chat_side} (room_id, n, h): the same hashing detect uses without triggers.
INSERT INTO {ops}.room_fingerprints (entity, side, room_id, row_count, hash)
SELECT %(entity)s, 'room', room_id, n, h FROM ({room_side}) AS r
UNION ALL
SELECT %(entity)s, 'chat', room_id, n, h FROM ({chat_side}) AS c
