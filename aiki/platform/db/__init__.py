"""Storage: tables, the engine, wake-up notifications and the repositories that hold all SQL."""
