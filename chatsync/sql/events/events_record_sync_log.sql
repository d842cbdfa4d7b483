-- One row per processed event. A redelivered event (after a crash or a lost ack) keeps its first
-- outcome and processing time and counts one more attempt. Returns this batch's outcomes.
WITH e AS (
    SELECT e.*, coalesce(a.changed, 0) AS changed,
           CASE WHEN coalesce(a.changed, 0) > 0 THEN 'applied' ELSE 'noop' END AS outcome
    FROM unnest(%(event_ids)s::text[], %(stream_ids)s::text[], %(types)s::text[], %(room_ids)s::{room_key_type}[],
                %(user_ids)s::{user_key_type}[], %(occurred)s::timestamptz[])
         AS e(event_id, stream_id, type, room_id, user_id, occurred_at)
    LEFT JOIN (
        SELECT room_id, user_id, count(*) AS changed
        FROM {ops}.repair_audit WHERE run_id = %(run_id)s
        GROUP BY room_id, user_id
    ) AS a ON a.room_id = e.room_id AND a.user_id IS NOT DISTINCT FROM e.user_id
),
recorded AS (
    INSERT INTO {ops}.sync_log AS s (event_id, stream_id, type, room_id, user_id, occurred_at,
                                     processed_at, outcome, changed, run_id, worker)
    SELECT event_id, stream_id, type, room_id, user_id, occurred_at, clock_timestamp(),
           outcome, changed, %(run_id)s, %(worker)s
    FROM e
    ON CONFLICT (event_id) DO UPDATE SET attempts = s.attempts + 1
    RETURNING 1
)
SELECT outcome, count(*) FROM e GROUP BY outcome
