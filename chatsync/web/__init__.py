"""The health page and the Prometheus endpoint."""
