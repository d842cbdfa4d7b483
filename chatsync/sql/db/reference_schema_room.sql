-- The reference application schema, room side: the room system (truth). Owned by the
-- application, shipped here for the demo and the tests. Idempotent.
CREATE SCHEMA IF NOT EXISTS room;

CREATE TABLE IF NOT EXISTS room.rooms (
    id           bigint PRIMARY KEY,
    name         text NOT NULL,
    status       text NOT NULL CHECK (status IN ('DRAFT','UPCOMING','LIVE','ENDED','CANCELLED')),
    is_public    boolean NOT NULL DEFAULT true,
    chat_enabled boolean NOT NULL DEFAULT true,
    archived_at  timestamptz NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS room.room_participants (
    room_id     bigint NOT NULL REFERENCES room.rooms (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL,
    role        text NOT NULL CHECK (role IN ('OWNER','ADMIN','EVENT_ADMIN','MODERATOR','SPEAKER','MEMBER','GUEST')),
    permissions bigint NOT NULL DEFAULT 0,
    banned_at   timestamptz NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

-- The incremental scope reads "changed since the watermark".
CREATE INDEX IF NOT EXISTS rooms_updated_at_idx ON room.rooms (updated_at);
CREATE INDEX IF NOT EXISTS room_participants_updated_at_idx ON room.room_participants (updated_at);
