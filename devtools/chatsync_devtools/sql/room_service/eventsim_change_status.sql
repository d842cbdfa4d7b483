-- The room service, simulated: a room moves to another status.
UPDATE {rr}
SET {rr_status} = (%(statuses)s::text[])[1 + (coalesce(array_position(%(statuses)s::text[], {rr_status}), 1) - 1
                                             + %(shift)s) %% cardinality(%(statuses)s::text[])],
    {rr_updated_at} = now()
WHERE {rr_id} = %(room)s
RETURNING NULL::bigint, %(type)s
