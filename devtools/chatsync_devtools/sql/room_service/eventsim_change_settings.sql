-- The room service, simulated: a room's is_public or chat_enabled setting flips.
UPDATE {rr}
SET {rr_is_public} = CASE WHEN %(flip_public)s THEN NOT coalesce({rr_is_public}, false) ELSE {rr_is_public} END,
    {rr_chat_enabled} = CASE WHEN %(flip_public)s THEN {rr_chat_enabled} ELSE NOT coalesce({rr_chat_enabled}, false) END,
    {rr_updated_at} = now()
WHERE {rr_id} = %(room)s
RETURNING NULL::bigint, %(type)s
