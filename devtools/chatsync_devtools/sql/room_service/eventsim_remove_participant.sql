-- The room service, simulated: a participant (the k-th, modulo the room's size, of the room by user id) leaves.
DELETE FROM {rp}
WHERE ({rp_room_id}, {rp_user_id}) = (SELECT {rp_room_id}, {rp_user_id} FROM {rp} WHERE {rp_room_id} = %(room)s
                                      ORDER BY {rp_user_id} OFFSET %(k)s %% greatest((SELECT count(*) FROM {rp} WHERE {rp_room_id} = %(room)s), 1) LIMIT 1)
RETURNING {rp_user_id}, %(type)s
