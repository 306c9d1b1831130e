"""Fixtures of the chaos suite: a PostgreSQL cluster of its own per module, a database and processes per test."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import cluster as pg
from tests.chaos.harness import create_database
from tests.e2e.procs import WorkerProcs


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[pg.Cluster]:
    """A throwaway PostgreSQL cluster on a free port: the suite restarts it without disturbing anything else."""
    why = pg.available()
    if why is not None:
        # A prerequisite of the suite, not an optional extra: fail saying what to install.
        pytest.fail(f"the chaos suite makes its own PostgreSQL cluster, and cannot here: {why}", pytrace=False)
    made = pg.Cluster.create()
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
async def chaos_db_url(chaos_cluster: pg.Cluster) -> str:
    """A fresh database on the chaos cluster, migrated with ``aiki migrate apply`` (dropped with the cluster)."""
    return await create_database(chaos_cluster, "aiki_chaos")


@pytest.fixture
def chaos_procs(chaos_db_url: str, tmp_path: Path) -> Iterator[WorkerProcs]:
    """The test's processes: all stopped (resumed first, if a test left one stopped) and reaped at teardown.

    Their output stays in ``tmp_path``; the end of each is printed (pytest shows it on failure).
    """
    group = WorkerProcs(tmp_path, chaos_db_url, tmp_path / "e2e-ledger.txt")
    try:
        yield group
    finally:
        for child in group.children:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGCONT)
        group.cleanup()
        for child in group.children:
            text = child.stderr_text()
            print(f"===== {child.name} (pid {child.pid}, exit {child.proc.returncode}) last lines =====")
            print("\n".join(text.splitlines()[-15:]))
