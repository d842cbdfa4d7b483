-- Drift, participants: pick <n> room participants (outside the rooms whose chat room is
-- missing) in seed-hash order and give the k-th one the kinds of cycle[k mod len(cycle)], so
-- every kind is used once the pick holds len(cycle) rows and no row gets conflicting drifts.
-- drift_rooms < 1 concentrates the pick in that fraction of the rooms (seed-hash chosen).
INSERT INTO pg_temp.chatsync_sim_picks (room_id, user_id, kinds)
SELECT room_id, user_id,
       string_to_array((%(cycle)s::text[])[1 + mod(row_number() OVER (ORDER BY h) - 1,
                                                    cardinality(%(cycle)s::text[]))], ',')
FROM (
    SELECT r.{rp_room_id} AS room_id, r.{rp_user_id} AS user_id,
           pg_temp.sim_hash(%(seed)s, 'drift.participant', r.{rp_room_id}, r.{rp_user_id}) AS h
    FROM {rp} AS r
    WHERE NOT EXISTS (SELECT 1 FROM pg_temp.chatsync_sim_changes AS m
                      WHERE m.room_id = r.{rp_room_id} AND m.user_id IS NULL)
      AND (%(drift_rooms)s >= 1 OR pg_temp.sim_unit(%(seed)s, 'drift.room', r.{rp_room_id}) < %(drift_rooms)s)
    ORDER BY h
    LIMIT %(n)s
) AS picked
