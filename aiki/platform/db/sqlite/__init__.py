"""SQLite implementations of the database interfaces."""
