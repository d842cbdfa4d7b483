-- Health page: the latest dead letters.
SELECT received_at, stream_id, event_id, type, reason FROM {ops}.dead_letters
ORDER BY id DESC LIMIT %(limit)s
