-- The keys to diff in the rooms of one room-id range whose fingerprints differ: those changed
-- since the last detect, and those of findings still unresolved (drift older than the log, a
-- skipped repair) not among them. In key order, so the probes of both tables walk their key
-- indexes forward: the changed keys come in that order from their primary key and the few
-- unresolved ones are merged in (no sort or duplicate removal of the whole set).
INSERT INTO pg_temp.chatsync_scope_keys (room_id, user_id)
SELECT room_id, user_id FROM (
    SELECT k.room_id, k.user_id FROM {ops}.fingerprint_changed_keys AS k
    WHERE k.entity = %(entity)s AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR k.room_id >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR k.room_id < %(room_hi)s)
      AND k.room_id IN (SELECT room_id FROM pg_temp.chatsync_differing_rooms)
    UNION ALL
    SELECT DISTINCT i.room_id, i.user_id FROM {ops}.inconsistencies AS i
    WHERE i.run_id = ANY({unsettled_runs})
      AND i.resolved_at IS NULL AND i.kind = ANY(%(kinds)s)
      AND (CAST(%(room_lo)s AS {room_key_type}) IS NULL OR i.room_id >= %(room_lo)s) AND (CAST(%(room_hi)s AS {room_key_type}) IS NULL OR i.room_id < %(room_hi)s)
      AND i.room_id IN (SELECT room_id FROM pg_temp.chatsync_differing_rooms)
      AND NOT EXISTS (SELECT 1 FROM {ops}.fingerprint_changed_keys AS k
                      WHERE k.entity = %(entity)s AND k.room_id = i.room_id AND k.user_id = i.user_id)
) AS keys
ORDER BY 1, 2
