"""Everything Airflow-shaped: connections through the providers' hooks, task defaults, callbacks,
the plugin, the DAGs."""
