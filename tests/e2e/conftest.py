"""Fixtures of the end-to-end tests: a fresh PostgreSQL database and a worker-process group per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import db_support
from tests.e2e.procs import WorkerProcs


@pytest.fixture
async def e2e_db_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database of this test alone; dropped afterwards."""
    name = await db_support.create_pg_database("aiki_e2e")
    try:
        yield db_support.pg_url(name)
    finally:
        await db_support.drop_pg_database(name)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.txt"


@pytest.fixture
def procs(e2e_db_url: str, ledger: Path, tmp_path: Path) -> Iterator[WorkerProcs]:
    """Worker processes of the test; all are stopped (SIGTERM, then SIGKILL) and reaped at teardown,
    before the database is dropped, and their stderr is printed (pytest shows it on failure)."""
    group = WorkerProcs(tmp_path, e2e_db_url, ledger)
    try:
        yield group
    finally:
        group.cleanup()
        group.dump()
