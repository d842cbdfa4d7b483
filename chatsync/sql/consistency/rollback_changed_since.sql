-- Rollback, first look: the run's audited rows the chat side changed since the repair (their
-- current image is not the audit's after-image). They are skipped and reported, never restored.
SELECT a.action, a.room_id, a.user_id
FROM {ops}.repair_audit AS a
LEFT JOIN {chat} AS c ON {chat_key_eq_audit}
WHERE a.run_id = %(run_id)s AND a.entity = {entity} AND a.rolled_back_by IS NULL
  AND CASE WHEN a.action = 'delete' THEN to_jsonb(c) IS NOT NULL
           ELSE to_jsonb(c) IS DISTINCT FROM a.after END
ORDER BY a.room_id, a.user_id NULLS FIRST
