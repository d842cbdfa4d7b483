-- Redis losing the event stream's data (a restart without persistence, a failover to a replica
-- that was behind) loses the events no worker had committed, and the
-- changes they named. Each worker records the newest entry it committed, in the same transaction
-- as the sync log, and compares it and the Redis server's run_id with what Redis holds; a loss is
-- recorded here (heal_*) before anything else, so a worker killed while healing leaves the heal
-- to the next.
-- epoch counts the losses healed: a batch read before a loss must not move the new position.
CREATE TABLE IF NOT EXISTS {ops}.event_streams (
    stream            text NOT NULL,
    consumer_group    text NOT NULL,
    epoch             int NOT NULL DEFAULT 0,
    committed_ms      bigint NOT NULL DEFAULT 0,     -- newest entry id committed (ms-seq)
    committed_seq     bigint NOT NULL DEFAULT 0,
    committed_occurred_at timestamptz,               -- the newest occurred_at committed: a heal repairs
                                                     -- what changed since (minus the overlap) without limit
    redis_run_id      text,                          -- the Redis server's run_id (a restart changes it)
    checked_at        timestamptz,
    heal_pending_since timestamptz,                  -- a loss detected, its healing pass not done
    heal_reason       text,
    healed_at         timestamptz,
    heal_run_id       bigint,
    losses            int NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, consumer_group)
);
-- An outage in which Redis lost its data: the cache recovery then rebuilds every room.
ALTER TABLE {ops}.redis_outages ADD COLUMN IF NOT EXISTS data_lost text;
