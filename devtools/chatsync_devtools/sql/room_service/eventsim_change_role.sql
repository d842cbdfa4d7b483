-- The room service, simulated: a participant (the k-th, modulo the room's size, by user id) gets another role and its mask.
UPDATE {rp} AS t
SET {rp_role} = (%(roles)s::text[])[n.i], {rp_permissions} = (%(masks)s::bigint[])[n.i], {rp_updated_at} = now()
FROM (SELECT p.{rp_room_id} AS room_id, p.{rp_user_id} AS user_id,
             1 + (coalesce(array_position(%(roles)s::text[], p.{rp_role}), 1) - 1 + %(shift)s)
                 %% cardinality(%(roles)s::text[]) AS i
      FROM {rp} AS p WHERE p.{rp_room_id} = %(room)s ORDER BY p.{rp_user_id} OFFSET %(k)s %% greatest((SELECT count(*) FROM {rp} WHERE {rp_room_id} = %(room)s), 1) LIMIT 1) AS n
WHERE t.{rp_room_id} = n.room_id AND t.{rp_user_id} = n.user_id
RETURNING t.{rp_user_id}, %(type)s
