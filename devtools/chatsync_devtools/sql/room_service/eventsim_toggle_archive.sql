-- The room service, simulated: a room is archived, or unarchived if archived.
UPDATE {rr}
SET {rr_archived_at} = CASE WHEN {rr_archived_at} IS NULL THEN now() END, {rr_updated_at} = now()
WHERE {rr_id} = %(room)s
RETURNING NULL::bigint, CASE WHEN {rr_archived_at} IS NULL THEN 'room.unarchived' ELSE 'room.archived' END
