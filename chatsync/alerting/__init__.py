"""Alerts: structured alert lines and the channels they go to (Slack, email)."""
