"""mountd: the daemon (the seeds' pachd). Owns the store, serves the HTTP API."""
