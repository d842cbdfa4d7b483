-- How many of a run's keys of one entity changed on the room side or the chat side since
-- %(since)s (a timestamp without time zone read as UTC). After a loss of the event stream, these
-- are what the lost events named: the heal repairs them without the blind-repair limit (the rest
-- of what it finds counts against it).
SELECT count(*) FROM (
    SELECT DISTINCT i.room_id, i.user_id FROM {ops}.inconsistencies AS i
    WHERE i.run_id = %(run_id)s AND {is_entity_finding}
      AND (EXISTS (SELECT 1 FROM {room} AS r WHERE {room_eq_i} AND {room_changed})
           OR EXISTS (SELECT 1 FROM {chat} AS c WHERE {chat_eq_i} AND {chat_changed}))
) AS k
