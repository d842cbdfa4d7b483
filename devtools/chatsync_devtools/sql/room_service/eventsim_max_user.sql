-- The room service, simulated: new users get ids above every existing one.
SELECT coalesce(max({rp_user_id}), 0) FROM {rp}
