"""The PostgreSQL store: engine and pool setup, the driver connection, and the statements only
PostgreSQL can run (row locks that skip, one-statement CTEs, LISTEN/NOTIFY)."""
