-- Write freezes of chat rooms (the major-inconsistency procedure): a lease that ends by itself.
CREATE TABLE {ops}.freezes (
    room_id    bigint PRIMARY KEY,
    reason     text NOT NULL,
    frozen_by  text NOT NULL,
    frozen_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX freezes_expires_idx ON {ops}.freezes (expires_at);
