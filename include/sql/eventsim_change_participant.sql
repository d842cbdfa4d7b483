-- The room service, simulated: a role, permission or ban change of one participant.
UPDATE {rp}
SET {rp_role} = coalesce(%(role)s, {rp_role}),
    {rp_permissions} = coalesce(%(permissions)s, {rp_permissions}),
    {rp_banned_at} = CASE %(ban)s WHEN 'ban' THEN coalesce({rp_banned_at}, now())
                                  WHEN 'unban' THEN NULL ELSE {rp_banned_at} END,
    {rp_updated_at} = now()
WHERE {rp_room_id} = %(room)s AND {rp_user_id} = %(user)s
