-- The room service, simulated: a user joins a room.
INSERT INTO {rp} ({rp_room_id}, {rp_user_id}, {rp_role}, {rp_permissions}, {rp_updated_at})
VALUES (%(room)s, %(user)s, %(role)s, %(permissions)s, now())
ON CONFLICT DO NOTHING
RETURNING {rp_user_id}, %(type)s
