"""chatsync's DAGs, one module each; a DAG folder holds one short file per DAG that imports and
calls the DAG's function (the repository's dags/ folder: copy or mount it)."""
