-- Two-database topology: per-room fingerprints of the copy of the room side kept in this schema
-- (the copies themselves, mirror_room_rooms and mirror_room_participants, follow the room tables'
-- mapped columns and types: `chatsync init` creates them from the room database's catalog).
-- A room whose fingerprint here differs from the one the room database computes is streamed again.
-- Unlogged, like the copies: derived data, rebuilt by the next pass when a crash empties them
-- (together, so they never disagree); writing no WAL makes a first pass ~30 % faster.
CREATE UNLOGGED TABLE IF NOT EXISTS {ops}.mirror_fingerprints (
    entity    text   NOT NULL,
    room_id   bigint NOT NULL,
    row_count bigint NOT NULL,
    hash      bigint NOT NULL,
    PRIMARY KEY (entity, room_id)
);
