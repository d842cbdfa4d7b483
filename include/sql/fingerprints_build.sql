-- The baseline: one entity's fingerprints hashed from both tables (run while the new triggers'
-- lock holds writes back, so no change falls between the baseline and the delta log).
INSERT INTO {ops}.room_fingerprints (entity, side, room_id, row_count, hash)
SELECT %(entity)s, 'room', {room_room_id}, count(*), bit_xor({room_hash}) FROM {room} AS r GROUP BY 3
UNION ALL
SELECT %(entity)s, 'chat', {chat_room_id}, count(*), bit_xor({chat_hash}) FROM {chat} AS c GROUP BY 3
