"""The benchmarks behind `chatsync bench` (docs/benchmarks.md)."""
