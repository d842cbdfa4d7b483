-- Simulator session setup: deterministic pseudo-random helpers and scratch tables, all temporary
-- (gone with the transaction or the session). Every random value is a hash of (seed, purpose,
-- keys), so the generated data depends on the seed only, never on the plan or the row order
-- (parallel workers or another join order give the same rows). One-expression SQL functions
-- are inlined by the planner, so they cost no call overhead.
CREATE FUNCTION pg_temp.sim_hash(seed bigint, purpose text, a bigint, b bigint DEFAULT 0)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashint8extended(b, hashint8extended(a, hashtextextended(purpose, seed))) $$;

-- Uniform in [0, 1): the hash's low 53 bits, a double's whole mantissa.
CREATE FUNCTION pg_temp.sim_unit(seed bigint, purpose text, a bigint, b bigint DEFAULT 0)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (pg_temp.sim_hash(seed, purpose, a, b) & 9007199254740991)::double precision
             / 9007199254740992 $$;

-- Whole number in [0, n).
CREATE FUNCTION pg_temp.sim_int(seed bigint, purpose text, n bigint, a bigint, b bigint DEFAULT 0)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT mod(pg_temp.sim_hash(seed, purpose, a, b) & 9223372036854775807, n) $$;

-- The room-side plan: one row per room with its size and how its user ids are drawn.
CREATE TEMP TABLE chatsync_sim_rooms (
    id         bigint PRIMARY KEY,
    size       int NOT NULL,     -- participants, owner included
    staff      int NOT NULL,     -- ADMIN / EVENT_ADMIN / MODERATOR seats after the owner
    user_start bigint NOT NULL,  -- user id of seat k: 1 + (user_start + k * user_step) mod pool
    user_step  bigint NOT NULL   -- in [1, pool): with a prime pool, seats never share a user
) ON COMMIT DROP;

-- Every (kind, key) the drift statements really produced, from their RETURNING rows.
CREATE TEMP TABLE chatsync_sim_changes (
    kind    text NOT NULL,
    room_id bigint NOT NULL,
    user_id bigint NULL          -- NULL for room-level kinds
) ON COMMIT DROP;

-- The room participants picked for participant-level drift, with the kinds planned for each.
CREATE TEMP TABLE chatsync_sim_picks (
    room_id bigint NOT NULL,
    user_id bigint NOT NULL,
    kinds   text[] NOT NULL,
    PRIMARY KEY (room_id, user_id)
) ON COMMIT DROP;
