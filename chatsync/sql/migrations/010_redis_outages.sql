-- Redis connection loss: what the cache missed while Redis was unreachable (a durable outbox of
-- keys to resync) and the outage itself (one open at a time), closed by the recovery.
CREATE TABLE {ops}.redis_outages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at      timestamptz,
    first_error   text NOT NULL,
    queued        int NOT NULL DEFAULT 0,      -- keys put in the outbox
    overflowed    boolean NOT NULL DEFAULT false,  -- the outbox filled up: the recovery resyncs everything
    resync_scope  text,                        -- rooms | all
    resynced      jsonb,
    verified      jsonb
);
CREATE UNIQUE INDEX redis_outages_one_open ON {ops}.redis_outages ((true)) WHERE ended_at IS NULL;

CREATE TABLE {ops}.cache_outbox (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outage_id bigint NOT NULL,
    room_id   bigint NOT NULL,
    user_id   bigint,                          -- NULL: the room's own state
    source    text NOT NULL,                   -- worker:<name> | freeze | ...
    queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX cache_outbox_room_idx ON {ops}.cache_outbox (room_id);
