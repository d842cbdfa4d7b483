-- Drift, missing_participant: delete the chat rows of the picks planned as missing (the
-- "participant added" event was lost).
WITH gone AS (
    DELETE FROM {cp} AS c USING pg_temp.chatsync_sim_picks AS p
    WHERE c.{cp_room_id} = p.room_id AND c.{cp_user_id} = p.user_id
      AND %(missing_kind)s = ANY (p.kinds)
    RETURNING c.{cp_room_id} AS room_id, c.{cp_user_id} AS user_id
)
INSERT INTO pg_temp.chatsync_sim_changes (kind, room_id, user_id)
SELECT %(missing_kind)s, room_id, user_id FROM gone
