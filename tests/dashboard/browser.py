"""Browser-test helpers: Chromium from the Debian package driven by Playwright, a real `aiki server`
process with IAM on PostgreSQL, worker processes, and screenshots into the folder the test command
names (``$AIKI_SCREENSHOTS``, default ``test-artifacts/screenshots``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("AIKI_CHROMIUM", "/usr/bin/chromium")
SECRET = "dashboard-e2e-secret-abcdefghijklmnopqrstuvwxyz-0123456789"
PASSWORD = "correct horse battery staple"
T = TypeVar("T")


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("AIKI_SCREENSHOTS") or REPO_ROOT / "test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIKI_") and k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO_ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Procs:
    """`aiki` processes of one test; all are stopped at teardown and their output printed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aiki.cli", *args], cwd=self.tmp_path, env=env, stdout=out, stderr=out
            )
        self.children.append((name, proc, log))
        return proc

    def output(self) -> str:
        return "\n".join(
            f"--- {n} (exit {p.poll()}) ---\n{log.read_text(errors='replace')}" for n, p, log in self.children
        )

    def stop(self) -> None:
        for _, proc, _ in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in self.children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait(self, what: str, check: Callable[[], T | None], timeout: float = 30) -> T:
        """Poll ``check`` until it returns a truthy value (a deadline, never a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc, _ in self.children:
                assert proc.poll() is None, f"{name} exited early\n{self.output()}"
            try:
                value = check()
            except httpx.TransportError:
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.output()}")


def start_server(procs: Procs, db_url: str, *, port: int | None = None, env: dict[str, str] | None = None) -> str:
    """A real `aiki server` with IAM; returns its base URL (``localhost``: Chromium keeps Secure cookies there).

    ``port`` lets a test know the URL before the server starts (an OIDC redirect URI); ``env`` adds settings.
    """
    port = port or free_port()
    base = f"http://localhost:{port}"
    procs.start(
        "server",
        ["server", "--host", "127.0.0.1", "--port", str(port)],
        clean_env(
            procs.tmp_path,
            DATABASE_URL=db_url,
            AIKI_SECRET_KEY=SECRET,
            AIKI_BASE_URL=base,
            # No SMTP unless the test brings one (tests/dashboard/test_browser_email.py does).
            **{"AIKI_EMAIL_VERIFICATION": "off", **(env or {})},
        ),
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        procs.wait("the server", lambda: http.get("/health").status_code == 200)
    return base


def api(base: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base.replace("localhost", "127.0.0.1"), headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def launch_chromium(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium "
            "(apt-get install -y --no-install-recommends chromium)"
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
