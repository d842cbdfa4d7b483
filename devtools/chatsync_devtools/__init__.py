"""chatsync-devtools: the simulator, the room-service simulator, the demo, the embedded services
and the benchmarks of chatsync, for development and evaluation; never needed in production."""

__version__ = "0.1.0"
