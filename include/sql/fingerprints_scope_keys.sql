-- The keys to diff in the rooms of one room-id range whose fingerprints differ: those changed
-- since the last detect, and those of findings still unresolved (drift older than the log, a
-- skipped repair). In key order, so the probes of both tables walk their key indexes forward.
INSERT INTO pg_temp.chatsync_scope_keys (room_id, user_id)
SELECT room_id, user_id FROM {ops}.fingerprint_changed_keys
WHERE entity = %(entity)s AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
  AND room_id IN (SELECT room_id FROM pg_temp.chatsync_differing_rooms)
UNION
SELECT room_id, user_id FROM {ops}.inconsistencies
WHERE resolved_at IS NULL AND kind = ANY(%(kinds)s) AND room_id >= %(room_lo)s AND room_id < %(room_hi)s
  AND room_id IN (SELECT room_id FROM pg_temp.chatsync_differing_rooms)
ORDER BY 1, 2
