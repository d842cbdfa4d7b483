-- The benchmark's uuid-keyed copy of the reference data: every room and user id replaced by a uuid
-- made from it (md5 of the id: random-looking, as the uuid v4 keys of most ORMs are), each table
-- rewritten in its row order, its key index built again.
ALTER TABLE room.room_participants DROP CONSTRAINT IF EXISTS room_participants_room_id_fkey;
ALTER TABLE room.rooms ALTER COLUMN id TYPE uuid USING md5('room ' || id)::uuid;
ALTER TABLE room.room_participants
    ALTER COLUMN room_id TYPE uuid USING md5('room ' || room_id)::uuid,
    ALTER COLUMN user_id TYPE uuid USING md5('user ' || user_id)::uuid;
ALTER TABLE room.room_participants
    ADD CONSTRAINT room_participants_room_id_fkey FOREIGN KEY (room_id) REFERENCES room.rooms (id) ON DELETE CASCADE;
ALTER TABLE chat.chat_rooms ALTER COLUMN room_id TYPE uuid USING md5('room ' || room_id)::uuid;
ALTER TABLE chat.chat_participants
    ALTER COLUMN room_id TYPE uuid USING md5('room ' || room_id)::uuid,
    ALTER COLUMN user_id TYPE uuid USING md5('user ' || user_id)::uuid;
