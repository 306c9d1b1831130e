"""`aiki server` options of multi-process deployments: malformed settings stop it with a message naming them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.procs import REPO_ROOT


def _server(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "AIKI_PG_LISTEN")}
    full.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'srv.db'}", PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "aiki.cli", "server", *args],
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
        ((), {"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        (("--redis-url", "http://redis:6379"), {}, "REDIS_URL"),
        ((), {"AIKI_PG_LISTEN": "maybe"}, "AIKI_PG_LISTEN"),
        ((), {"AIKI_DB_POOL_SIZE": "many"}, "AIKI_DB_POOL_SIZE"),
        (("--pool-size", "0"), {}, "--pool-size"),
        ((), {"AIKI_TRUSTED_PROXIES": "proxy.internal"}, "AIKI_TRUSTED_PROXIES"),
        (("--trusted-proxies", "10.0.0.0/33"), {}, "--trusted-proxies"),
        ((), {"AIKI_API_RATE_LIMIT": "-1"}, "AIKI_API_RATE_LIMIT"),
        (("--api-rate-limit", "lots"), {}, "--api-rate-limit"),
        ((), {"AIKI_LOG_FORMAT": "xml"}, "AIKI_LOG_FORMAT"),
    ],
)
def test_malformed_multi_process_settings_exit_2_naming_them(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    done = _server(tmp_path, *args, **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr
    assert "Traceback" not in done.stderr
