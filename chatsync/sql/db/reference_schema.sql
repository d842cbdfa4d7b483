-- The reference application schema: the room system (truth) and the chat copy.
-- Owned by the application, shipped here for the demo and the tests. Idempotent.
CREATE SCHEMA IF NOT EXISTS room;
CREATE SCHEMA IF NOT EXISTS chat;

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

-- The chat copy has no foreign key to the room side (separate service), and no CHECK on role or
-- status: drift and bad writes are exactly what chatsync must find.
CREATE TABLE IF NOT EXISTS chat.chat_rooms (
    room_id       bigint PRIMARY KEY,
    status        text,
    is_public     boolean,
    chat_enabled  boolean,
    archived      boolean NOT NULL DEFAULT false,
    writes_frozen boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS chat.chat_participants (
    room_id     bigint NOT NULL,
    user_id     bigint NOT NULL,
    role        text,
    permissions bigint,
    banned      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

-- The incremental scope reads "changed since the watermark" on both sides.
CREATE INDEX IF NOT EXISTS rooms_updated_at_idx ON room.rooms (updated_at);
CREATE INDEX IF NOT EXISTS room_participants_updated_at_idx ON room.room_participants (updated_at);
CREATE INDEX IF NOT EXISTS chat_rooms_updated_at_idx ON chat.chat_rooms (updated_at);
CREATE INDEX IF NOT EXISTS chat_participants_updated_at_idx ON chat.chat_participants (updated_at);
