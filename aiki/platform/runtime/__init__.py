"""Background loops of the server: timers (sleeps, timeouts, retries, delayed starts) and lease recovery."""
