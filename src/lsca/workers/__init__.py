"""Worker processes: each drains the shards it owns and executes the calls."""
