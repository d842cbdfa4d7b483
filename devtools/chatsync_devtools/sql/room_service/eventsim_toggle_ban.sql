-- The room service, simulated: a participant (the k-th, modulo the room's size, by user id) is banned, or unbanned if banned.
UPDATE {rp}
SET {rp_banned_at} = CASE WHEN {rp_banned_at} IS NULL THEN now() END, {rp_updated_at} = now()
WHERE ({rp_room_id}, {rp_user_id}) = (SELECT {rp_room_id}, {rp_user_id} FROM {rp} WHERE {rp_room_id} = %(room)s
                                      ORDER BY {rp_user_id} OFFSET %(k)s %% greatest((SELECT count(*) FROM {rp} WHERE {rp_room_id} = %(room)s), 1) LIMIT 1)
RETURNING {rp_user_id},
          CASE WHEN {rp_banned_at} IS NULL THEN 'room.participant.unbanned' ELSE 'room.participant.banned' END
