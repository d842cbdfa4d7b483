"""chatsync: Airflow pipelines that keep a live-events platform's chat system consistent with its
room system."""

__version__ = "0.1.0"
