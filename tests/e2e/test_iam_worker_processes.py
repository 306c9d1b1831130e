"""Tenancy across processes: a standalone `aiki server` with IAM, and two `aiki worker --api-key`
processes of two organizations serving the same workflow name and version, both running. Each
worker executes only its own namespace's runs (each run's output names the worker that ran it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-secret-key-abcdefghijklmnopqrstuvwxyz-0123456789"

WORKFLOW_MODULE = textwrap.dedent(
    """
    import os

    from aiki import Run, task, workflow

    @task(name="whoami")
    async def whoami(value: str) -> str:
        return os.environ["TENANT_TAG"] + ":" + value

    tenant_wf = workflow(name="tenant-wf")

    @tenant_wf.v("1.0.0")
    async def tenant_v1(run: Run, value: str) -> str:
        return await whoami.start(run, value)
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIKI_") and k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO_ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Procs:
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


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    group = Procs(tmp_path)
    try:
        yield group
    finally:
        group.stop()
        print(group.output())


def _wait(what: str, procs: Procs, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc, _ in procs.children:
            assert proc.poll() is None, f"{name} exited early\n{procs.output()}"
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n{procs.output()}")


def test_worker_processes_of_two_organizations_execute_only_their_own_runs(
    e2e_db_url: str, tmp_path: Path, procs: Procs
) -> None:
    (tmp_path / "tenant_workflows.py").write_text(WORKFLOW_MODULE)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start(
        "server",
        ["server", "--port", str(port)],
        _env(
            tmp_path, DATABASE_URL=e2e_db_url, AIKI_SECRET_KEY=SECRET, AIKI_BASE_URL=base, AIKI_EMAIL_VERIFICATION="off"
        ),
    )
    with httpx.Client(base_url=base, timeout=30) as http:
        _wait("the server", procs, lambda: http.get("/health").status_code == 200)
        assert http.get("/api/v1/runs").status_code == 401
        keys = {}
        for tag in ("A", "B"):
            person = httpx.Client(base_url=base, timeout=30)
            signed = person.post(
                "/api/v1/auth/signup", json={"email": f"{tag.lower()}@example.com", "password": "password-of-" + tag}
            )
            assert signed.status_code == 201, signed.text
            ns = signed.json()["namespace"]["id"]
            # The server sets a Secure cookie; this test speaks plain http, so send it by hand.
            cookie = signed.cookies.get("aiki_session") or signed.headers["set-cookie"].split(";")[0].split("=", 1)[1]
            made = person.post(
                f"/api/v1/namespaces/{ns}/api-keys",
                json={"name": "worker", "role": "worker"},
                headers={"cookie": f"aiki_session={cookie}", "origin": base},
            )
            assert made.status_code == 201, made.text
            keys[tag] = made.json()["key"]
            person.close()
        for tag in ("A", "B"):
            procs.start(
                f"worker-{tag}",
                ["worker", "tenant_workflows:tenant_v1", "--url", base, "--api-key", keys[tag]],
                _env(tmp_path, TENANT_TAG=tag),
            )

        def start(tag: str, value: str) -> str | None:
            started = http.post(
                "/api/v1/runs",
                json={"workflow": "tenant-wf", "version": "1.0.0", "input": value},
                headers={"authorization": f"Bearer {keys[tag]}"},
            )
            # 404 until this namespace's worker has registered the version.
            assert started.status_code in (201, 404), started.text
            return str(started.json()["run"]["id"]) if started.status_code == 201 else None

        runs: dict[str, list[str]] = {"A": [], "B": []}
        for i in range(6):
            for tag in ("A", "B"):
                runs[tag].append(_wait(f"a run of {tag} to start", procs, lambda t=tag, n=i: start(t, f"{t}{n}")))
        for tag, ids in runs.items():
            auth = {"authorization": f"Bearer {keys[tag]}"}
            for run_id in ids:

                def done(rid: str = run_id, headers: dict[str, str] = auth) -> dict[str, Any] | None:
                    view: dict[str, Any] = http.get(f"/api/v1/runs/{rid}", headers=headers).json()
                    return view if view["status"] == "completed" else None

                view = _wait(f"run {run_id} of {tag}", procs, done)
                assert view["output"].startswith(f"{tag}:{tag}"), view
            other = "B" if tag == "A" else "A"
            listed = http.get("/api/v1/runs", headers={"authorization": f"Bearer {keys[other]}"}).json()["items"]
            assert not set(ids) & {r["id"] for r in listed}
