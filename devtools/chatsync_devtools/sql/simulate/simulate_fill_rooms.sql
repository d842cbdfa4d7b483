-- Simulator, room side: plan <rooms> rooms (size, staff seats, user draw) into
-- chatsync_sim_rooms and insert them into the rooms table.
-- Sizes are 1 + a log-normal draw of mean <members> - 1 (many small rooms, a few big ones,
-- capped at <max_extra> extra seats); about <archived_share> of the rooms are archived, and
-- those are ENDED or CANCELLED.
WITH draws AS (
    SELECT g AS id,
           pg_temp.sim_unit(%(seed)s, 'room.size.u1', g) AS u1,
           pg_temp.sim_unit(%(seed)s, 'room.size.u2', g) AS u2,
           pg_temp.sim_unit(%(seed)s, 'room.archived', g) < %(archived_share)s AS archived,
           pg_temp.sim_unit(%(seed)s, 'room.status', g) AS u_status,
           pg_temp.sim_unit(%(seed)s, 'room.updated_at', g) AS u_updated
    FROM generate_series(1, %(rooms)s::bigint) AS g
),
planned AS (
    INSERT INTO pg_temp.chatsync_sim_rooms (id, size, staff, user_start, user_step)
    SELECT d.id, s.size, LEAST(s.size - 1, floor(ln(s.size)))::int,
           pg_temp.sim_int(%(seed)s, 'room.user_start', %(pool)s, d.id),
           1 + pg_temp.sim_int(%(seed)s, 'room.user_step', %(pool)s - 1, d.id)
    FROM draws AS d
    CROSS JOIN LATERAL (
        -- Box-Muller: a standard normal from two uniforms, then exp() for the log-normal
        SELECT 1 + LEAST(%(max_extra)s::double precision, round(exp(
                   %(log_mu)s + %(log_sigma)s * sqrt(-2 * ln(1 - d.u1)) * cos(2 * pi() * d.u2))))::int AS size
    ) AS s
    RETURNING id
)
INSERT INTO {rr} ({rr_id}, {name_column} {rr_status}, {rr_is_public}, {rr_chat_enabled}, {rr_archived_at}, {rr_updated_at})
SELECT d.id,
       {name_value}
       CASE WHEN d.archived
            THEN (%(archived_status_values)s::text[])[width_bucket(d.u_status, %(archived_status_bounds)s::float8[])]
            ELSE (%(status_values)s::text[])[width_bucket(d.u_status, %(status_bounds)s::float8[])]
       END,
       pg_temp.sim_unit(%(seed)s, 'room.is_public', d.id) < %(public_share)s,
       pg_temp.sim_unit(%(seed)s, 'room.chat_enabled', d.id) < %(chat_enabled_share)s,
       CASE WHEN d.archived THEN now() - d.u_updated * %(history)s::interval END,
       now() - d.u_updated * %(history)s::interval
FROM draws AS d
JOIN planned AS p ON p.id = d.id
ORDER BY d.id
