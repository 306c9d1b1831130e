"""`aiki server` lease, heartbeat and pool options: checked with one line naming them, and in effect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.procs import REPO_ROOT, WorkerProcs

pytestmark = [pytest.mark.timeout(120)]


def _server(tmp_path: Path, *args: str, url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AIKI_") and k != "DATABASE_URL"}
    full.update(
        DATABASE_URL=url or f"sqlite+aiosqlite:///{tmp_path / 'srv.db'}",
        AIKI_SECRET_KEY="lease-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        AIKI_BASE_URL="http://127.0.0.1:1",
        AIKI_EMAIL_VERIFICATION="off",
        PYTHONPATH=str(REPO_ROOT),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "aiki.cli", "server", "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=full,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("--lease-ttl", "0"), {}, "--lease-ttl"),
        (("--lease-ttl", "0.1"), {}, "--lease-ttl must be at least 0.2 s"),
        ((), {"AIKI_LEASE_TTL": "long"}, "AIKI_LEASE_TTL"),
        (("--lease-ttl", "6", "--heartbeat-interval", "4"), {}, "--heartbeat-interval (4 s) must be at most half"),
        ((), {"AIKI_LEASE_TTL": "6", "AIKI_HEARTBEAT_INTERVAL": "5"}, "AIKI_HEARTBEAT_INTERVAL (5 s)"),
        ((), {"AIKI_HEARTBEAT_INTERVAL": "-1"}, "AIKI_HEARTBEAT_INTERVAL"),
        (("--pool-timeout", "0"), {}, "--pool-timeout"),
        ((), {"AIKI_DB_POOL_TIMEOUT": "soon"}, "AIKI_DB_POOL_TIMEOUT"),
    ],
)
def test_malformed_lease_and_pool_settings_exit_2_naming_them(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    done = _server(tmp_path, *args, **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.postgres_only
async def test_pool_size_1_leaves_no_connection_beside_listen(tmp_path: Path, e2e_db_url: str) -> None:
    done = _server(tmp_path, "--pool-size", "1", url=e2e_db_url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--pool-size" in done.stderr
    assert "Traceback" not in done.stderr
    assert "alembic" not in done.stderr  # its INFO lines are not shown unless asked


@pytest.mark.postgres_only
async def test_lease_settings_reach_the_workers(procs: WorkerProcs) -> None:
    srv = await procs.start_server(env={"AIKI_LEASE_TTL": "7", "AIKI_HEARTBEAT_INTERVAL": "1.5"})
    async with procs.http(base_url=srv.url) as http:
        body = {"worker_id": "settings-probe", "host": "t", "versions": []}
        resp = await http.post("/api/v1/workers/register", json=body)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["lease_ttl_ms"], resp.json()["heartbeat_interval_ms"]) == (7000, 1500)
