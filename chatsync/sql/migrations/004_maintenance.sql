-- Maintenance: one report per DAG kind and data interval (a rerun rewrites it), and the actions
-- maintenance took, keyed by interval so a rerun or a backfill never does one twice.

CREATE TABLE {ops}.maintenance_reports (
    kind           text NOT NULL CHECK (kind IN ('daily', 'weekly', 'monthly')),
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    report         jsonb NOT NULL,
    markdown       text NOT NULL,
    attention      boolean NOT NULL DEFAULT false,   -- something needs a person
    written_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, interval_start)
);

CREATE TABLE {ops}.maintenance_actions (
    kind           text NOT NULL,
    interval_start timestamptz NOT NULL,
    action         text NOT NULL,                    -- reindex | delete
    target         text NOT NULL,                    -- index or table
    details        jsonb NOT NULL DEFAULT '{{}}',
    done_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, interval_start, action, target)
);
