-- The room service, simulated: the rooms it can change.
SELECT {rr_id} FROM {rr} ORDER BY {rr_id}
