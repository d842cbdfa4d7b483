-- The room service, simulated: one existing participant of a room (the k-th by user id), as it is.
SELECT {rp_user_id}, {rp_role}, {rp_permissions}, {rp_banned_at} IS NOT NULL
FROM {rp} WHERE {rp_room_id} = %(room)s ORDER BY {rp_user_id} OFFSET %(k)s LIMIT 1
