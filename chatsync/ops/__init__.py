"""Procedures and upkeep: freezes, the major-inconsistency procedure, the post-deploy check, grants,
health, metrics, maintenance."""
