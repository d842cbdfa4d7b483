-- Simulator, room side: expand each planned room into its participants. Seat 1 is the OWNER,
-- the next `staff` seats are ADMIN / EVENT_ADMIN / MODERATOR, the rest mostly MEMBER with some
-- SPEAKER and GUEST. Permissions are the role's default mask, with one bit toggled for about
-- <permission_tweak_share> of the non-owners; about <ban_share> of the non-owners are banned.
INSERT INTO {rp} ({rp_room_id}, {rp_user_id}, {rp_role}, {rp_permissions}, {rp_banned_at}, {rp_updated_at})
SELECT p.room_id, p.user_id, p.role,
       CASE WHEN p.seat > 1 AND pg_temp.sim_unit(%(seed)s, 'participant.tweak', p.room_id, p.seat) < %(permission_tweak_share)s
            THEN p.mask # (%(permission_bits)s::bigint[])[1 + pg_temp.sim_int(%(seed)s, 'participant.tweak_bit',
                                  cardinality(%(permission_bits)s::bigint[]), p.room_id, p.seat)]
            ELSE p.mask
       END,
       CASE WHEN p.seat > 1 AND pg_temp.sim_unit(%(seed)s, 'participant.banned', p.room_id, p.seat) < %(ban_share)s
            THEN p.updated_at
       END,
       p.updated_at
FROM (
    SELECT r.id AS room_id, s.seat,
           1 + mod(r.user_start + s.seat * r.user_step, %(pool)s) AS user_id,
           role.name AS role,
           (%(role_masks)s::bigint[])[array_position(%(role_names)s::text[], role.name)] AS mask,
           now() - pg_temp.sim_unit(%(seed)s, 'participant.updated_at', r.id, s.seat) * %(history)s::interval AS updated_at
    FROM pg_temp.chatsync_sim_rooms AS r
    CROSS JOIN LATERAL generate_series(1, r.size) AS s(seat)
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN s.seat = 1 THEN %(owner_role)s::text
            WHEN s.seat <= 1 + r.staff
                THEN (%(staff_role_values)s::text[])[width_bucket(
                         pg_temp.sim_unit(%(seed)s, 'participant.role', r.id, s.seat), %(staff_role_bounds)s::float8[])]
            ELSE (%(crowd_role_values)s::text[])[width_bucket(
                         pg_temp.sim_unit(%(seed)s, 'participant.role', r.id, s.seat), %(crowd_role_bounds)s::float8[])]
        END AS name
    ) AS role
) AS p

