# Imported by Python at start-up in the child processes whose PYTHONPATH holds this folder (the
# fault tests' CLI runs, workers and Airflow components): installs the fault hook when asked for.
import os

if any(name.startswith("CHATSYNC_FAULT_") for name in os.environ):
    import chatsync_faults

    chatsync_faults.install()
