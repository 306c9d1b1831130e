"""The `aiki` command, run as a real process: migrate, configuration errors, and `aiki dev`."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiki.platform.db import migrate

ROOT = Path(__file__).resolve().parents[2]


GOOD_SECRET = "s3cret-0123456789-abcdefghijklmnopqrstuvwxyz"
IAM_VARS = (
    "AIKI_SECRET_KEY",
    "AIKI_SECRET_KEY_PREVIOUS",
    "AIKI_BASE_URL",
    "AIKI_API_KEY",
    "AIKI_SMTP_URL",
    "AIKI_EMAIL_FROM",
    "AIKI_EMAIL_VERIFICATION",
)


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AIKI_PORT", "AIKI_HOST", *IAM_VARS)}
    # Run the working tree's code whatever the current directory is.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def aiki_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiki.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env or _env(),
        check=False,
    )


# -- migrate -------------------------------------------------------------------------------------


def test_migrate_apply_then_status_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    head = migrate.head_revision()
    assert head

    pending = aiki_cli("migrate", "status", "--database-url", url, cwd=tmp_path)
    assert pending.returncode == 0, pending.stderr
    assert "current revision: (empty)" in pending.stdout
    assert f"head revision:    {head}" in pending.stdout
    assert "migrations pending" in pending.stdout

    applied = aiki_cli("migrate", "apply", "--database-url", url, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "database: sqlite" in applied.stdout
    assert f"current revision: {head}" in applied.stdout
    assert f"head revision:    {head}" in applied.stdout
    assert "up to date" in applied.stdout

    status = aiki_cli("migrate", "status", "--database-url", url, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"current revision: {head}" in status.stdout
    assert "up to date" in status.stdout
    assert "pending" not in status.stdout


def test_migrate_reads_database_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    done = aiki_cli("migrate", "apply", cwd=tmp_path, env=_env(DATABASE_URL=url))
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    assert (tmp_path / "env.db").exists()


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not a url", "mysql://root@localhost/aiki", ""])
def test_malformed_database_url_exits_2_naming_it(tmp_path: Path, url: str) -> None:
    done = aiki_cli("migrate", "status", cwd=tmp_path, env=_env(DATABASE_URL=url))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_malformed_database_url_flag_exits_2_naming_it(tmp_path: Path) -> None:
    done = aiki_cli("migrate", "apply", "--database-url", "bogus", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("port", ["notaport", "70000", "0"])
def test_server_with_a_bad_port_exits_2_naming_aiki_port(tmp_path: Path, port: str) -> None:
    env = _env(AIKI_PORT=port, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'srv.db'}")
    done = aiki_cli("server", cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "AIKI_PORT" in done.stderr
    assert port in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("missing", "present"),
    [
        ("AIKI_SECRET_KEY", {"AIKI_BASE_URL": "https://aiki.example.com"}),
        ("AIKI_BASE_URL", {"AIKI_SECRET_KEY": GOOD_SECRET}),
    ],
)
def test_server_without_iam_settings_exits_2_naming_the_variable(
    tmp_path: Path, missing: str, present: dict[str, str]
) -> None:
    env = _env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'srv.db'}", **present)
    done = aiki_cli("server", cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert missing in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"AIKI_SECRET_KEY": "too-short", "AIKI_BASE_URL": "https://aiki.example.com"}, "AIKI_SECRET_KEY"),
        ({"AIKI_SECRET_KEY": " " * 40, "AIKI_BASE_URL": "https://aiki.example.com"}, "AIKI_SECRET_KEY is empty"),
        (
            {"AIKI_SECRET_KEY": "too-short" * 5, "AIKI_BASE_URL": "https://aiki.example.com"},
            "AIKI_SECRET_KEY has only 6 distinct characters",
        ),
        (
            {
                "AIKI_SECRET_KEY": GOOD_SECRET,
                "AIKI_SECRET_KEY_PREVIOUS": "too-short" * 5,
                "AIKI_BASE_URL": "https://aiki.example.com",
            },
            "AIKI_SECRET_KEY_PREVIOUS has only 6 distinct characters",
        ),
        ({"AIKI_SECRET_KEY": GOOD_SECRET, "AIKI_BASE_URL": "aiki.example.com"}, "AIKI_BASE_URL"),
        (
            {
                "AIKI_SECRET_KEY": GOOD_SECRET,
                "AIKI_BASE_URL": "https://a.example",
                "AIKI_OIDC_ISSUER": "https://id.example",
            },
            "AIKI_OIDC_CLIENT_ID",
        ),
    ],
)
def test_server_with_malformed_iam_settings_exits_2_naming_the_variable(
    tmp_path: Path, overrides: dict[str, str], named: str
) -> None:
    env = _env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'srv.db'}", **overrides)
    done = aiki_cli("server", cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr
    assert "too-short" not in done.stderr  # a secret is never echoed
    assert "Traceback" not in done.stderr


_IAM_OK = {"AIKI_SECRET_KEY": GOOD_SECRET, "AIKI_BASE_URL": "https://aiki.example.com"}


def test_server_without_smtp_refuses_to_start_unless_verification_is_off(tmp_path: Path) -> None:
    """Issue 11: accounts nobody can verify must not be created: no SMTP, no server (unless explicitly off)."""
    env = _env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'srv.db'}", **_IAM_OK)
    done = aiki_cli("server", cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.startswith("aiki:")]
    assert len(lines) == 1, done.stderr
    assert "AIKI_SMTP_URL" in lines[0]
    assert "AIKI_EMAIL_FROM" in lines[0]
    assert "AIKI_EMAIL_VERIFICATION=off" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            {"AIKI_SMTP_URL": "ftp://mailer:hunter2-secret@mail.example", "AIKI_EMAIL_FROM": "a@b.example"},
            "AIKI_SMTP_URL",
        ),
        ({"AIKI_SMTP_URL": "smtp://mailer:hunter2-secret@mail.example:99999"}, "AIKI_SMTP_URL"),
        ({"AIKI_SMTP_URL": "smtp://mailer:hunter2-secret@mail.example"}, "AIKI_EMAIL_FROM"),
        ({"AIKI_EMAIL_VERIFICATION": "maybe"}, "AIKI_EMAIL_VERIFICATION"),
    ],
)
def test_server_with_malformed_mail_settings_exits_2_naming_the_variable_not_the_password(
    tmp_path: Path, overrides: dict[str, str], named: str
) -> None:
    env = _env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'srv.db'}", **_IAM_OK, **overrides)
    done = aiki_cli("server", cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr
    assert "hunter2-secret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# -- aiki dev ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DevProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, out: Path, err: Path) -> None:
        self.proc = proc
        self.base_url = f"http://127.0.0.1:{port}"
        self.out = out
        self.err = err

    def output(self) -> str:
        return (
            f"exit={self.proc.poll()}\n--- stdout ---\n{self.out.read_text(errors='replace')}"
            f"\n--- stderr ---\n{self.err.read_text(errors='replace')}"
        )

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"aiki dev exited early\n{self.output()}"


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[DevProcess]:
    port = _free_port()
    out, err = tmp_path / "dev.stdout", tmp_path / "dev.stderr"
    url = f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiki.cli", "dev", "--port", str(port), "--database-url", url],
            cwd=tmp_path,
            env=_env(),
            stdout=stdout,
            stderr=stderr,
        )
    dev = DevProcess(proc, port, out, err)
    try:
        yield dev
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _poll(what: str, dev: DevProcess, check: Any, timeout: float) -> Any:
    """Call ``check`` until it returns something truthy; it is another process, so poll."""
    deadline = time.monotonic() + timeout
    while True:
        dev.assert_alive()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{dev.output()}")
        time.sleep(0.1)


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def test_dev_makes_a_private_secret_beside_its_database_and_never_prints_it(
    dev_server: DevProcess, tmp_path: Path
) -> None:
    dev = dev_server
    with httpx.Client(base_url=dev.base_url, timeout=30) as http:
        _poll("/health", dev, lambda: _healthy(http), timeout=30)
    _poll("the dev key line", dev, lambda: "Dev worker key" in dev.out.read_text(errors="replace"), timeout=30)
    secret_path = tmp_path / "dev.db.secret"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    secret = secret_path.read_text().strip()
    assert len(secret) >= 32
    assert secret not in dev.output()


def test_dev_serves_the_examples_and_stops_on_sigterm(dev_server: DevProcess) -> None:
    dev = dev_server
    with httpx.Client(base_url=dev.base_url, timeout=30) as http:
        _poll("/health", dev, lambda: _healthy(http), timeout=30)
        # IAM is on: anonymous requests are refused; `aiki dev` prints how to sign up and a dev key.
        assert http.get("/api/v1/runs").status_code == 401
        key_line = _poll(
            "the dev key line",
            dev,
            lambda: re.search(r"Dev worker key .*: (aiki_\S+)", dev.out.read_text(errors="replace")),
            timeout=30,
        )
        assert "/api/v1/auth/signup" in dev.out.read_text(errors="replace")
        http.headers["authorization"] = f"Bearer {key_line.group(1)}"

        started = http.post(
            "/api/v1/runs",
            json={
                "workflow": "subscription-trial",
                "version": "1.0.0",
                "input": {"user_id": "u1", "trial_period": "PT0.5S"},
            },
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["run"]["id"]

        def completed() -> dict[str, Any] | None:
            answer = http.get(f"/api/v1/runs/{run_id}", params={"wait_for": "completed", "timeout_ms": 10_000})
            assert answer.status_code == 200, answer.text
            view: dict[str, Any] = answer.json()
            assert view["status"] not in ("failed", "cancelled"), view
            return view if view["status"] == "completed" else None

        view = _poll(f"run {run_id} to complete", dev, completed, timeout=30)
        assert view["output"] == "downgraded"

        # The demo runs `aiki dev` printed at startup all finish (the slowest waits out a 10 s trial).
        line = _poll(
            "the demo runs line",
            dev,
            lambda: re.search(r"Started (\d+) demo runs: (.+)", dev.out.read_text(errors="replace")),
            timeout=30,
        )
        demo_ids = [i.strip() for i in line.group(2).split(",") if i.strip()]
        assert len(demo_ids) == int(line.group(1)) >= 1

        def demo_statuses() -> dict[str, str] | None:
            answer = http.get("/api/v1/runs", params={"limit": 500})
            assert answer.status_code == 200, answer.text
            items = {item["id"]: item for item in answer.json()["items"]}
            assert run_id in items
            mine = {i: items[i]["status"] if i in items else None for i in demo_ids}
            ended_badly = [items[i] for i, s in mine.items() if s in ("failed", "cancelled")]
            assert not ended_badly, f"demo runs ended badly: {ended_badly}\n{dev.output()}"
            return mine if all(s == "completed" for s in mine.values()) else None

        _poll("the demo runs to complete", dev, demo_statuses, timeout=45)

    dev.proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    try:
        code = dev.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"aiki dev did not exit within 10s of SIGTERM\n{dev.output()}")
    assert time.monotonic() - began < 5, f"aiki dev took {time.monotonic() - began:.1f}s to stop"
    assert code == 0, dev.output()
    assert "Traceback" not in dev.err.read_text(errors="replace"), dev.output()


def test_dev_without_smtp_writes_the_verification_link_to_its_log(dev_server: DevProcess) -> None:
    dev = dev_server
    with httpx.Client(base_url=dev.base_url, timeout=30) as http:
        _poll("/health", dev, lambda: _healthy(http), timeout=30)
        signed = http.post(
            "/api/v1/auth/signup", json={"email": "dev@example.com", "password": "a long enough passphrase 42"}
        )
        assert signed.status_code == 202, signed.text
        found = _poll(
            "the verification link in the log",
            dev,
            lambda: re.search(r"/ui/verify-email\?token=([A-Za-z0-9_\-]+)", dev.err.read_text(errors="replace")),
            timeout=10,
        )
        done = http.post("/api/v1/auth/verify-email", json={"token": found.group(1)})
        assert done.status_code == 200, done.text
        assert done.json()["user"]["email_verified"] is True
