"""The orchestration core: runs, tasks, events, timers. Knows nothing of HTTP."""
