-- The keys a fold took from the delta log that no detect has diffed yet. Folding between hourly
-- runs (chat_sync_health, every 5 minutes) moves the log's cost out of the hourly detect; the
-- keys wait here, and the next full detect diffs and removes them in its own transaction.
CREATE TABLE IF NOT EXISTS {ops}.fingerprint_changed_keys (
    entity  text   NOT NULL,
    room_id bigint NOT NULL,
    user_id bigint NOT NULL,
    PRIMARY KEY (entity, room_id, user_id)
);
