"""The SQLite store: one writer at a time behind an asyncio lock, WAL for readers, and the
statements SQLite spells differently (no row locks, ``IN`` lists, several statements where
PostgreSQL takes one)."""
