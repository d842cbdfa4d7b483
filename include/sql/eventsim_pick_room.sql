-- The room service, simulated: one room as it is.
SELECT {rr_status}, {rr_archived_at} IS NOT NULL, {rr_is_public}, {rr_chat_enabled} FROM {rr} WHERE {rr_id} = %(room)s
