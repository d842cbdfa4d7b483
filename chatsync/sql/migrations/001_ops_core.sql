-- chatsync's own tables for the consistency pipeline: runs, findings, repair audit, metrics.

CREATE TABLE {ops}.runs (
    run_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind              text NOT NULL DEFAULT 'check',      -- check | rollback
    scope             text NOT NULL,                      -- full | incremental | rooms | keys | range
    scope_params      jsonb NOT NULL DEFAULT '{{}}',
    triggered_by      text NOT NULL DEFAULT 'cli',        -- cli | airflow:<dag_id>/<run_id>
    status            text NOT NULL DEFAULT 'running',
    started_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    detect_started_at timestamptz,                        -- next incremental watermark
    finished_at       timestamptz,
    counts            jsonb NOT NULL DEFAULT '{{}}',      -- kind -> findings
    rows_to_change    bigint,
    total_rows        bigint,
    repaired          bigint,
    skipped           bigint,
    validation        jsonb,
    step_durations    jsonb NOT NULL DEFAULT '{{}}',      -- step -> seconds
    error             text,
    CONSTRAINT runs_status_known CHECK (status IN (
        'running', 'detected', 'consistent', 'repairing', 'repaired', 'validated',
        'validation_failed', 'major', 'failed', 'rolled_back'))
);
CREATE INDEX runs_status_started_idx ON {ops}.runs (status, started_at DESC);

-- One row per (key, kind) a run found. user_id is NULL for room-level kinds.
CREATE TABLE {ops}.inconsistencies (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES {ops}.runs (run_id) ON DELETE CASCADE,
    kind            text NOT NULL,
    room_id         bigint NOT NULL,
    user_id         bigint,
    chat_digest     text,            -- md5 of the compared chat columns at detection (NULL: no chat row)
    detected_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    status          text NOT NULL DEFAULT 'open',   -- open | repaired | skipped | resolved
    resolved_at     timestamptz,
    resolved_by_run bigint,
    CONSTRAINT inconsistencies_kind_known CHECK (kind IN (
        'missing_chat_room', 'orphan_chat_room', 'room_state_mismatch', 'missing_participant',
        'orphan_participant', 'role_mismatch', 'permissions_mismatch', 'ban_mismatch')),
    CONSTRAINT inconsistencies_status_known CHECK (status IN ('open', 'repaired', 'skipped', 'resolved'))
);
CREATE INDEX inconsistencies_run_room_idx ON {ops}.inconsistencies (run_id, room_id);
CREATE INDEX inconsistencies_open_key_idx ON {ops}.inconsistencies (room_id, user_id)
    WHERE resolved_at IS NULL;

-- Before/after image of every row a repair (or rollback) changed.
CREATE TABLE {ops}.repair_audit (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES {ops}.runs (run_id) ON DELETE CASCADE,
    entity         text NOT NULL,              -- room | participant
    action         text NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    room_id        bigint NOT NULL,
    user_id        bigint,
    before         jsonb,                      -- NULL for insert
    after          jsonb,                      -- NULL for delete
    changed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    rolled_back_by bigint
);
CREATE INDEX repair_audit_run_idx ON {ops}.repair_audit (run_id, room_id);

CREATE TABLE {ops}.metrics (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint REFERENCES {ops}.runs (run_id) ON DELETE SET NULL,
    name        text NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{{}}',
    value       double precision NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX metrics_name_time_idx ON {ops}.metrics (name, recorded_at);
CREATE INDEX metrics_run_idx ON {ops}.metrics (run_id);

-- Time to resolution of each resolved inconsistency: first detection of the (key, kind), by any
-- run, to its resolution: the end of the validation of the run that repaired it when that run
-- was validated (the hourly pass), else the repair's commit (the event worker) or the run that
-- found it gone.
CREATE VIEW {ops}.resolution_times AS
SELECT i.kind, i.room_id, i.user_id, i.resolved_by_run,
       min(i.detected_at) AS first_detected_at,
       max(coalesce(CASE WHEN r.status = 'validated' THEN r.finished_at END, i.resolved_at)) AS resolved_at,
       extract(epoch FROM max(coalesce(CASE WHEN r.status = 'validated' THEN r.finished_at END, i.resolved_at))
                          - min(i.detected_at))::double precision AS seconds
FROM {ops}.inconsistencies AS i
LEFT JOIN {ops}.runs AS r ON r.run_id = i.resolved_by_run
WHERE i.resolved_at IS NOT NULL
GROUP BY i.kind, i.room_id, i.user_id, i.resolved_by_run;
