-- The room service, simulated: a status, archive or settings change of one room.
UPDATE {rr}
SET {rr_status} = coalesce(%(status)s, {rr_status}),
    {rr_archived_at} = CASE %(archive)s WHEN 'archive' THEN coalesce({rr_archived_at}, now())
                                        WHEN 'unarchive' THEN NULL ELSE {rr_archived_at} END,
    {rr_is_public} = coalesce(%(is_public)s, {rr_is_public}),
    {rr_chat_enabled} = coalesce(%(chat_enabled)s, {rr_chat_enabled}),
    {rr_updated_at} = now()
WHERE {rr_id} = %(room)s
