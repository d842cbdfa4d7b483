-- The room service, simulated: one permission bit of a participant (the k-th, modulo the room's size, by user id) flips.
UPDATE {rp}
SET {rp_permissions} = coalesce({rp_permissions}, 0) # (1::bigint << %(bit)s), {rp_updated_at} = now()
WHERE ({rp_room_id}, {rp_user_id}) = (SELECT {rp_room_id}, {rp_user_id} FROM {rp} WHERE {rp_room_id} = %(room)s
                                      ORDER BY {rp_user_id} OFFSET %(k)s %% greatest((SELECT count(*) FROM {rp} WHERE {rp_room_id} = %(room)s), 1) LIMIT 1)
RETURNING {rp_user_id}, %(type)s
