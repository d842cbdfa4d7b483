-- Fold the delta log of one entity (what committed before this transaction's snapshot) into its
-- fingerprints. The keys it names wait in fingerprint_changed_keys for the next keyed diff.
WITH moved AS (
    DELETE FROM {ops}.room_fingerprint_deltas WHERE entity = %(entity)s
    RETURNING side, room_id, user_id, row_count, hash
), changed AS (
    INSERT INTO {ops}.fingerprint_changed_keys (entity, room_id, user_id)
    SELECT DISTINCT %(entity)s, room_id, user_id FROM moved
    ON CONFLICT DO NOTHING
), net AS (
    SELECT side, room_id, sum(row_count) AS row_count, bit_xor(hash) AS hash FROM moved GROUP BY side, room_id
)
INSERT INTO {ops}.room_fingerprints AS f (entity, side, room_id, row_count, hash)
SELECT %(entity)s, side, room_id, row_count, hash FROM net
ON CONFLICT (entity, side, room_id) DO UPDATE
SET row_count = f.row_count + excluded.row_count, hash = f.hash # excluded.hash
