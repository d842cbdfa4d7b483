-- Room ids named by a batch of events that the room side does not have (those events cannot apply).
SELECT r.id FROM unnest(%(rooms)s::{room_key_type}[]) AS r(id)
WHERE NOT EXISTS (SELECT 1 FROM {rooms} AS t WHERE t.{room_id} = r.id)
