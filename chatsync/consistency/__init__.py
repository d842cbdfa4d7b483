"""The consistency engine: scopes, the join diff and the fingerprint diff, decide, the audited
repair, rollback, and the pass."""
