-- Monitoring: metrics per time bucket (the health DAG fills each bucket once per data interval),
-- the state of each alert condition (dedup and "resolved" messages), and every alert sent.

CREATE TABLE {ops}.metric_buckets (
    bucket_start   timestamptz NOT NULL,
    bucket_seconds int NOT NULL,
    name           text NOT NULL,
    labels         jsonb NOT NULL DEFAULT '{{}}',
    value          double precision,
    computed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (name, labels, bucket_seconds, bucket_start)
);
CREATE INDEX metric_buckets_time_idx ON {ops}.metric_buckets (bucket_start);

CREATE TABLE {ops}.alert_state (
    condition        text PRIMARY KEY,
    firing           boolean NOT NULL,
    since            timestamptz NOT NULL,          -- when the condition last changed state
    last_notified_at timestamptz,
    value            double precision,
    threshold        double precision,
    message          text,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE {ops}.alert_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    condition text NOT NULL,
    event     text NOT NULL CHECK (event IN ('firing', 'repeat', 'resolved', 'failure')),
    message   text NOT NULL,
    value     double precision,
    threshold double precision,
    source    text NOT NULL,
    sent_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX alert_log_sent_idx ON {ops}.alert_log (sent_at);
