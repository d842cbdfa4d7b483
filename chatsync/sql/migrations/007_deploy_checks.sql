-- Post-deployment checks: one row per check of a deployed version.
CREATE TABLE {ops}.deploy_checks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version    text NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    passed     boolean NOT NULL,
    report     jsonb NOT NULL
);
