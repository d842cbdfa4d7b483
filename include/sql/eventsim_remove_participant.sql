-- The room service, simulated: a participant leaves.
DELETE FROM {rp} WHERE {rp_room_id} = %(room)s AND {rp_user_id} = %(user)s
