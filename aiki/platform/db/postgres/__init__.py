"""PostgreSQL implementations of the database interfaces."""
