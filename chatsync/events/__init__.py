"""The event path: the event envelope, the stream worker, the Redis cache, and recovery from a lost or emptied Redis."""
