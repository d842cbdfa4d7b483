"""The `chatsync` command."""
