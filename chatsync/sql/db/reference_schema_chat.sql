-- The reference application schema, chat side: the chat service's copy. Owned by the
-- application, shipped here for the demo and the tests. Idempotent.
CREATE SCHEMA IF NOT EXISTS chat;

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

-- The incremental scope reads "changed since the watermark".
CREATE INDEX IF NOT EXISTS chat_rooms_updated_at_idx ON chat.chat_rooms (updated_at);
CREATE INDEX IF NOT EXISTS chat_participants_updated_at_idx ON chat.chat_participants (updated_at);
