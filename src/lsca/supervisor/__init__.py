"""The supervisor: registration socket, IPC objects, worker pool, sessions."""
