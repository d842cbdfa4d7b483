-- Major-inconsistency procedure: what the sync log says about these rooms over the last day —
-- dead letters by reason class, and when each room last had an event synced.
SELECT 'dead_letter' AS source, regexp_replace(regexp_replace(reason, '''[^'']*''', '''…''', 'g'), '[0-9]+', 'N', 'g'),
       count(*), max(received_at)
FROM {ops}.dead_letters
WHERE received_at >= now() - interval '1 day' AND (raw->>'room_id')::text = ANY(%(rooms_text)s)
GROUP BY 2
UNION ALL
SELECT 'last_sync', room_id::text, count(*), max(processed_at)
FROM {ops}.sync_log WHERE room_id = ANY(%(rooms)s::{room_key_type}[]) AND processed_at >= now() - interval '1 day'
GROUP BY room_id
