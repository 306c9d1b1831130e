"""The environment's private database: a SQLite database in memory, copied from a migrated template.

SQLite's ``memdb`` VFS (SQLite 3.36+) lets every connection of the process open one in-memory
database by name, with ordinary locking: the server's pool of connections shares it as it would
share a file (the older ``cache=shared`` mode fails concurrent readers with "table is locked"). An
*anchor* connection held by the environment keeps the database alive between the pool's
connections and frees it when closed. Where SQLite is older, a file in a temporary directory
stands in for it.

Migrations run once per process, into a template database; each environment starts from a copy
of it (SQLite's backup API, a fraction of a millisecond) instead of migrating again.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

# The migrated, empty template every environment copies (made by the first one; then read only).
_template: SqliteStore | None = None


def memdb_supported() -> bool:
    """Whether this SQLite shares an in-memory database between connections by name (``memdb``)."""
    return sqlite3.sqlite_version_info >= (3, 36, 0)


class SqliteStore:
    """One SQLite database of the environment: its URL, and the connection that keeps it alive."""

    def __init__(self, *, in_memory: bool) -> None:
        self._directory: Path | None = None
        if in_memory:
            self._uri = f"file:/aiki-testing-{uuid.uuid4().hex}?vfs=memdb"
        else:
            self._directory = Path(tempfile.mkdtemp(prefix="aiki-testing-"))
            self._uri = f"file:{self._directory / 'aiki.db'}"
        # Any thread may copy the template out of it (its users are in one event loop, but which
        # thread runs that loop is theirs to choose).
        self._anchor: sqlite3.Connection | None = sqlite3.connect(self._uri, uri=True, check_same_thread=False)

    @property
    def url(self) -> str:
        """The database URL for ``aiki.database()``."""
        separator = "&" if "?" in self._uri else "?"
        return f"sqlite+aiosqlite:///{self._uri}{separator}uri=true"

    def copy_from(self, template: SqliteStore) -> None:
        """Make this database a copy of ``template``."""
        template.connection.backup(self.connection)

    @property
    def connection(self) -> sqlite3.Connection:
        if self._anchor is None:
            raise RuntimeError("the environment's database is closed")
        return self._anchor

    def close(self) -> None:
        """Free the database (idempotent)."""
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def template() -> SqliteStore | None:
    """The migrated template, if one was made in this process."""
    return _template


def keep_template(store: SqliteStore) -> bool:
    """Keep ``store`` (migrated, empty) as the template, unless one is kept already.

    Returns:
        Whether it was kept (if not, the caller closes it).
    """
    global _template
    if _template is not None:
        return False
    _template = store
    return True
