"""Error kinds: each failure is one of these, and the kind decides what happens."""


class ChatsyncError(Exception):
    """Base of chatsync's own errors."""


class ConfigError(ChatsyncError):
    """Wrong configuration or usage: fail at once, never retry (CLI exit 2)."""


class TransientError(ChatsyncError):
    """Worth retrying with backoff: connection loss, lock timeout, serialization failure."""


class ValidationError(ChatsyncError):
    """Bad input (malformed event, impossible value): quarantine it with the reason, never crash."""


class ValidationFailed(ChatsyncError):
    """The chat side failed the Great Expectations suite after a repair."""
