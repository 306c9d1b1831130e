"""A PostgreSQL cluster of the chaos suite's own, made with Debian's ``pg_createcluster``.

The suite restarts PostgreSQL on purpose; doing that to the shared cluster on port 5432 would break
every other test running beside it. So each chaos module creates a throwaway cluster on a free
port (trust auth on localhost, ``fsync`` off: the suite restarts the server, never the machine),
and drops it at the end. A cluster whose creator died (a killed pytest) is dropped by the next
creator: its conf directory holds the creator's pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.procs import free_port

PREFIX = "aiki_chaos_"
CONF_ROOT = Path("/etc/postgresql")
OWNER_FILE = "aiki_chaos_owner"


def available() -> str | None:
    """Why a cluster cannot be made here, or None if it can."""
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster"):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian's postgresql-common)"
    if _version() is None:
        return "no PostgreSQL server installed under /usr/lib/postgresql"
    if os.geteuid() != 0:
        return "pg_createcluster needs root here"
    return None


def _version() -> str | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted((p.name for p in root.glob("*") if (p / "bin" / "postgres").exists()), key=float)
    return versions[-1] if versions else None


def _run(*argv: str, timeout: float = 60.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_orphans() -> list[str]:
    """Drop chaos clusters whose creating process is gone; the names dropped."""
    version = _version()
    dropped: list[str] = []
    if version is None:
        return dropped
    for conf in (CONF_ROOT / version).glob(f"{PREFIX}*"):
        owner = conf / OWNER_FILE
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and _pid_alive(pid):
            continue
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run("pg_dropcluster", "--stop", version, conf.name)
            dropped.append(conf.name)
    return dropped


@dataclass
class Cluster:
    """One throwaway cluster: ``postgresql://postgres@127.0.0.1:<port>/``."""

    version: str
    name: str
    port: int

    @classmethod
    def create(cls) -> Cluster:
        version = _version()
        assert version is not None
        drop_orphans()
        error: Exception | None = None
        for _ in range(3):
            name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
            port = free_port()
            try:
                _run(
                    "pg_createcluster",
                    version,
                    name,
                    "-p",
                    str(port),
                    "--start-conf=manual",
                    # The suite restarts PostgreSQL, never the machine: the WAL reaches the OS at each
                    # commit, which is all a restart needs.
                    "-o",
                    "fsync=off",
                    "-o",
                    "max_connections=200",
                    "--",
                    "--auth=trust",
                )
            except RuntimeError as exc:
                error = exc
                continue
            (CONF_ROOT / version / name / OWNER_FILE).write_text(f"{os.getpid()}\n")
            cluster = cls(version, name, port)
            try:
                cluster.start()
            except RuntimeError as exc:
                error = exc
                cluster.drop()
                continue  # the port was taken meanwhile
            return cluster
        raise RuntimeError(f"could not create a PostgreSQL cluster for the chaos suite: {error}")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _ctl(self, *args: str) -> None:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *args)

    def start(self) -> None:
        self._ctl("start")

    def restart(self, mode: str = "fast", down_s: float = 0.0) -> float:
        """Restart PostgreSQL (``fast``: disconnect everyone; ``immediate``: crash recovery); seconds taken.

        With ``down_s``, it stays stopped that long before it starts again (an outage longer than
        the lease TTL: no worker can heartbeat meanwhile).
        """
        began = time.monotonic()
        if down_s <= 0:
            self._ctl("restart", "-m", mode)
        else:
            self._ctl("stop", "-m", mode)
            time.sleep(down_s)
            self._ctl("start")
        return time.monotonic() - began

    def drop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run("pg_dropcluster", "--stop", self.version, self.name)
