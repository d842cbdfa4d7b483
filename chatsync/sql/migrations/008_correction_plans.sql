-- Major-inconsistency procedure: the correction plan of a run, one row per room and kind,
-- reviewable before it is applied.
CREATE TABLE {ops}.correction_plans (
    run_id    bigint NOT NULL,
    room_id   bigint NOT NULL,
    kind      text NOT NULL,
    keys      int NOT NULL,
    action    text NOT NULL,        -- insert | update | delete (what the repair will do)
    planned_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, room_id, kind)
);
