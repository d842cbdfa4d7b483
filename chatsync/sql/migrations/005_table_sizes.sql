-- Capacity: table sizes measured by the weekly and monthly maintenance, one row per run and table.
CREATE TABLE {ops}.table_sizes (
    kind           text NOT NULL,
    interval_start timestamptz NOT NULL,
    table_name     text NOT NULL,
    bytes          bigint NOT NULL,
    row_estimate   bigint NOT NULL,
    measured_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, interval_start, table_name)
);
