-- Benchmark floor for repair: the same changes as chatsync's repair, from the same findings,
-- as plain statements: no row locks, no re-check, no audit, no bookkeeping. The benchmark runs
-- it in a transaction it rolls back, so chatsync's repair then meets the same drift.
WITH todo AS (
    SELECT DISTINCT kind, room_id, user_id FROM {ops}.inconsistencies WHERE run_id = %(run_id)s
), ins_rooms AS (
    INSERT INTO chat.chat_rooms (room_id, status, is_public, chat_enabled, archived)
    SELECT r.id, r.status, r.is_public, r.chat_enabled, r.archived_at IS NOT NULL
    FROM todo AS t JOIN room.rooms AS r ON r.id = t.room_id
    WHERE t.kind = 'missing_chat_room'
    RETURNING 1
), upd_rooms AS (
    UPDATE chat.chat_rooms AS c
    SET status = r.status, is_public = r.is_public, chat_enabled = r.chat_enabled,
        archived = r.archived_at IS NOT NULL
    FROM (SELECT DISTINCT room_id FROM todo WHERE kind = 'room_state_mismatch') AS t
    JOIN room.rooms AS r ON r.id = t.room_id
    WHERE c.room_id = t.room_id
    RETURNING 1
), del_rooms AS (
    DELETE FROM chat.chat_rooms AS c USING todo AS t
    WHERE t.kind = 'orphan_chat_room' AND c.room_id = t.room_id
    RETURNING 1
), ins AS (
    INSERT INTO chat.chat_participants (room_id, user_id, role, permissions, banned)
    SELECT r.room_id, r.user_id, r.role, r.permissions, r.banned_at IS NOT NULL
    FROM todo AS t JOIN room.room_participants AS r ON r.room_id = t.room_id AND r.user_id = t.user_id
    WHERE t.kind = 'missing_participant'
    RETURNING 1
), upd AS (
    UPDATE chat.chat_participants AS c
    SET role = r.role, permissions = r.permissions, banned = r.banned_at IS NOT NULL
    FROM (SELECT DISTINCT room_id, user_id FROM todo
          WHERE kind IN ('role_mismatch', 'permissions_mismatch', 'ban_mismatch')) AS t
    JOIN room.room_participants AS r ON r.room_id = t.room_id AND r.user_id = t.user_id
    WHERE c.room_id = t.room_id AND c.user_id = t.user_id
    RETURNING 1
), del AS (
    DELETE FROM chat.chat_participants AS c USING todo AS t
    WHERE t.kind = 'orphan_participant' AND c.room_id = t.room_id AND c.user_id = t.user_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins_rooms) + (SELECT count(*) FROM upd_rooms) + (SELECT count(*) FROM del_rooms)
     + (SELECT count(*) FROM ins) + (SELECT count(*) FROM upd) + (SELECT count(*) FROM del)
