-- Event sync: one row per processed event (the daily review and the sync metrics read it) and
-- the dead letters (events that cannot be applied, with the reason and the raw entry).

CREATE TABLE {ops}.sync_log (
    event_id     text PRIMARY KEY,
    stream_id    text NOT NULL,                  -- Redis Stream entry id
    type         text NOT NULL,
    room_id      bigint NOT NULL,
    user_id      bigint,
    occurred_at  timestamptz NOT NULL,
    processed_at timestamptz NOT NULL,           -- first time it was applied
    outcome      text NOT NULL CHECK (outcome IN ('applied', 'noop')),
    changed      int NOT NULL DEFAULT 0,         -- chat rows the batch changed for this key
    attempts     int NOT NULL DEFAULT 1,         -- deliveries (a redelivery after a crash adds one)
    run_id       bigint,                         -- the keys-scope run that reconciled it
    worker       text NOT NULL
);
CREATE INDEX sync_log_processed_idx ON {ops}.sync_log (processed_at);

CREATE TABLE {ops}.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id   text NOT NULL,
    event_id    text,
    type        text,
    reason      text NOT NULL,
    raw         jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker      text NOT NULL,
    CONSTRAINT dead_letters_stream_id_unique UNIQUE (stream_id)
);
CREATE INDEX dead_letters_received_idx ON {ops}.dead_letters (received_at);
