-- Drift, role / permissions / ban mismatches on the other picks: another non-owner role, one
-- permission bit toggled (so the mask stays within the known bits), the ban flag flipped.
-- What is recorded is what the updated row really breaks, compared with its room row by the
-- rules (kinds_array), not what was planned.
WITH drifted AS (
    UPDATE {cp} AS c
    SET {cp_role} = CASE WHEN %(role_kind)s = ANY (p.kinds)
            THEN (array_remove(%(drift_roles)s::text[], c.{cp_role}))[1 + pg_temp.sim_int(
                     %(seed)s, 'drift.role', cardinality(array_remove(%(drift_roles)s::text[], c.{cp_role})),
                     p.room_id, p.user_id)]
            ELSE c.{cp_role} END,
        {cp_permissions} = CASE WHEN %(permissions_kind)s = ANY (p.kinds)
            THEN c.{cp_permissions} # (%(permission_bits)s::bigint[])[1 + pg_temp.sim_int(
                     %(seed)s, 'drift.permission_bit', cardinality(%(permission_bits)s::bigint[]),
                     p.room_id, p.user_id)]
            ELSE c.{cp_permissions} END,
        {cp_banned} = CASE WHEN %(ban_kind)s = ANY (p.kinds) THEN NOT c.{cp_banned} ELSE c.{cp_banned} END,
        {cp_updated_at} = now()
    FROM pg_temp.chatsync_sim_picks AS p
    JOIN {rp} AS r ON r.{rp_room_id} = p.room_id AND r.{rp_user_id} = p.user_id
    WHERE c.{cp_room_id} = p.room_id AND c.{cp_user_id} = p.user_id
      AND NOT %(missing_kind)s = ANY (p.kinds)
    RETURNING c.{cp_room_id} AS room_id, c.{cp_user_id} AS user_id, {kinds_array} AS kinds
)
INSERT INTO pg_temp.chatsync_sim_changes (kind, room_id, user_id)
SELECT k.kind, d.room_id, d.user_id
FROM drifted AS d
CROSS JOIN LATERAL unnest(d.kinds) AS k(kind)
WHERE k.kind IS NOT NULL
