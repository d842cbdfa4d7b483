-- Per-room fingerprints kept current by statement triggers (`chatsync fingerprints install`):
-- the row count and the xor of a 64-bit row hash of each room, per entity and side. A write
-- appends its net change per key to the delta log (no lock on a shared row, so concurrent
-- writers never wait on each other); detect folds the log into the fingerprints, compares them
-- and diffs only the changed keys of the rooms that differ. Xor and sums commute: order does
-- not matter.
CREATE TABLE IF NOT EXISTS {ops}.room_fingerprints (
    entity     text   NOT NULL,
    side       text   NOT NULL CHECK (side IN ('room', 'chat')),
    room_id    bigint NOT NULL,
    row_count  bigint NOT NULL,
    hash       bigint NOT NULL,
    PRIMARY KEY (entity, side, room_id)
);
CREATE TABLE IF NOT EXISTS {ops}.room_fingerprint_deltas (
    entity     text   NOT NULL,
    side       text   NOT NULL,
    room_id    bigint NOT NULL,
    user_id    bigint NOT NULL,
    row_count  bigint NOT NULL,
    hash       bigint NOT NULL
);
-- One row per entity whose fingerprints are maintained; stale_since set when a write bypassed
-- the row triggers (TRUNCATE): detect then hashes the tables again until a rebuild.
CREATE TABLE IF NOT EXISTS {ops}.fingerprint_maintenance (
    entity       text PRIMARY KEY,
    built_at     timestamptz NOT NULL,
    rows_hashed  bigint NOT NULL,
    stale_since  timestamptz,
    stale_reason text
);
-- TRUNCATE fires no row trigger: it marks the entity's fingerprints stale instead.
CREATE OR REPLACE FUNCTION {ops}.fingerprint_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $chatsync$
BEGIN
    UPDATE {ops}.fingerprint_maintenance
    SET stale_since = coalesce(stale_since, clock_timestamp()),
        stale_reason = coalesce(stale_reason, format('TRUNCATE of %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME))
    WHERE entity = TG_ARGV[0];
    RETURN NULL;
END
$chatsync$;
