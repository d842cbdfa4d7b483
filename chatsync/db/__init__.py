"""Postgres: connections, the one retry, the SQL statements (package data), migrations, runs and advisory locks."""
