"""A PostgreSQL cluster of one test, on its own port, that the test may stop and restart.

Made with Debian's ``pg_createcluster`` (trust authentication, localhost only) and dropped at the
end with ``pg_dropcluster``; the shared cluster on 5432 is never touched. Tests that need it fail
where the tools are missing (``scripts/ensure_postgres.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.procs import WorkerProcs, free_port

PG_VERSION = "15"


def _pg(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@dataclass
class ScratchCluster:
    name: str
    port: int

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _ctl(self, action: str, *extra: str) -> None:
        _pg("pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, self.name, action, *extra)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        """Fast shutdown: sessions are ended (``AdminShutdownError``), then the server goes away."""
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")


@contextlib.contextmanager
def scratch_cluster() -> Iterator[ScratchCluster]:
    """A new, started cluster; dropped (stopped first) when the block ends."""
    if not (shutil.which("pg_createcluster") and shutil.which("pg_ctlcluster")):
        pytest.fail("pg_createcluster/pg_ctlcluster not found: install Debian's postgresql-common", pytrace=False)
    cluster = ScratchCluster(f"aiki_test_{uuid.uuid4().hex[:8]}", free_port())
    _pg("pg_createcluster", "-p", str(cluster.port), PG_VERSION, cluster.name, "--", "--auth=trust")
    try:
        cluster.start()
        yield cluster
    finally:
        _pg("pg_dropcluster", "--stop", PG_VERSION, cluster.name)


@contextlib.asynccontextmanager
async def cluster_with_procs(tmp_path: Path) -> AsyncIterator[tuple[ScratchCluster, WorkerProcs]]:
    """A scratch cluster with an empty ``aiki`` database, and the process helpers aimed at it
    (cleaned up, their logs dumped, when the block ends)."""
    with scratch_cluster() as cluster:
        admin = await asyncpg.connect(cluster.admin_dsn)
        try:
            await admin.execute("CREATE DATABASE aiki")
        finally:
            await admin.close()
        procs = WorkerProcs(tmp_path, cluster.url("aiki"), tmp_path / "ledger.txt")
        try:
            yield cluster, procs
        finally:
            procs.cleanup()
            procs.dump()
