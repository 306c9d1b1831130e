"""Helpers of the push endpoint end-to-end tests (``test_push_endpoints.py``).

* :func:`provision` — a tenant of a running ``aiki server``: a fresh account, an admin API key
  (manages endpoints, starts runs) and a worker API key (the endpoint's client records with it);
* :func:`start_endpoint` — the endpoint app (``tests/e2e/push_endpoint_app.py``) served by uvicorn
  in its own process, on a given port;
* :class:`PushApi` — the ``/api/v1/endpoints`` routes and the run reads the tests check.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import Child, WorkerProcs, poll_until, poll_until_async
from tests.e2e.push_endpoint_app import (
    API_KEY_ENV,
    FAIL_FIRST_ENV,
    PEERS_ENV,
    SECRET_ENV,
    SERVER_URL_ENV,
    VERSIONS,
)
from tests.e2e.workflows import BLOCK_ENV, FSYNC_ENV

PASSWORD = "correct horse battery staple"
# Settings of every `aiki server` of these tests: private URLs allowed (the endpoint is on 127.0.0.1).
# Backoff and breaker keep their defaults (500 ms doubling, 5 failures open it for 5 s).
PUSH_SERVER_ENV = {"AIKI_ENDPOINTS_ALLOW_PRIVATE": "1"}
_emails = itertools.count(1)


@dataclass(frozen=True)
class Tenant:
    """One account's namespace on a server, with its two API keys."""

    url: str
    namespace_id: str
    admin_key: str
    worker_key: str


async def provision(url: str) -> Tenant:
    """Sign up a fresh account on ``url``; create an admin and a worker API key of its namespace."""
    email = f"push-{time.time_ns()}-{next(_emails)}@example.com"
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        signed = await http.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
        assert signed.status_code == 201, signed.text
        namespace_id = signed.json()["namespace"]["id"]
        # The session cookie is `Secure` and this is plain http: send it by hand, from our origin.
        headers = {"cookie": signed.headers["set-cookie"].split(";")[0], "origin": url}
        keys = {}
        for role in ("admin", "worker"):
            made = await http.post(
                f"/api/v1/namespaces/{namespace_id}/api-keys",
                json={"name": f"push-{role}", "role": role},
                headers=headers,
            )
            assert made.status_code == 201, made.text
            keys[role] = made.json()["key"]
    return Tenant(url, namespace_id, keys["admin"], keys["worker"])


# -- the endpoint process -------------------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def start_endpoint(
    procs: WorkerProcs,
    *,
    port: int,
    server_url: str,
    api_key: str,
    secret: str,
    fail_first: int = 0,
    block_task: str | None = None,
    fsync: bool = True,
    log_peers: bool = False,
    timeout: float = 30.0,
) -> Child:
    """Serve the endpoint app with uvicorn on ``port`` and wait until it accepts connections."""
    name = f"endpoint{sum(1 for c in procs.children if c.name.startswith('endpoint')) + 1}"
    argv = ["-m", "uvicorn", "tests.e2e.push_endpoint_app:build", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {
        SERVER_URL_ENV: server_url,
        API_KEY_ENV: api_key,
        SECRET_ENV: secret,
        FAIL_FIRST_ENV: str(fail_first),
        FSYNC_ENV: "1" if fsync else "0",
        PEERS_ENV: "1" if log_peers else "0",
        "AIKI_LOG_LEVEL": "INFO",
    }
    if block_task is not None:
        env[BLOCK_ENV] = block_task
    child = procs.spawn(name, argv, env=env)

    def up() -> bool:
        if not child.alive():
            raise AssertionError(f"{name} exited with {child.proc.returncode}:\n{child.stderr_text()}")
        return _listening(port)

    await poll_until(up, timeout=timeout, what=f"{name} listening on {port}")
    return child


def server_of_ports(server_pids: dict[str, int], endpoint_port: int) -> dict[int, str]:
    """Which server process owns each TCP connection to ``endpoint_port`` open now: local port →
    server name (Linux: ``/proc/net/tcp*`` and the processes' socket descriptors)."""
    inode_owner: dict[str, str] = {}
    for name, pid in server_pids.items():
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode_owner[target[8:-1]] = name
    owners: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(remote.rsplit(":", 1)[1], 16) == endpoint_port and inode in inode_owner:
                    owners[int(local.rsplit(":", 1)[1], 16)] = inode_owner[inode]
    return owners


def endpoint_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


# -- the API ------------------------------------------------------------------------------------


class PushApi:
    """The admin's view of one server: endpoints, runs, their tasks and deliveries."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30)

    async def close(self) -> None:
        await self.http.aclose()

    async def create_endpoint(
        self, url: str, versions: list[list[str]] | None = None, **options: Any
    ) -> httpx.Response:
        body = {"url": url, "versions": VERSIONS if versions is None else versions, **options}
        return await self.http.post("/api/v1/endpoints", json=body)

    async def register(self, url: str, versions: list[list[str]] | None = None, **options: Any) -> tuple[str, str]:
        """Register an endpoint; its id and its signing secret (shown only now)."""
        made = await self.create_endpoint(url, versions, **options)
        assert made.status_code == 201, made.text
        body = made.json()
        return body["endpoint"]["id"], body["secret"]

    async def endpoint(self, endpoint_id: str) -> dict[str, Any]:
        got = await self.http.get(f"/api/v1/endpoints/{endpoint_id}")
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def rotate(self, endpoint_id: str, grace_ms: int) -> tuple[dict[str, Any], str]:
        made = await self.http.post(f"/api/v1/endpoints/{endpoint_id}/rotate-secret", json={"grace_ms": grace_ms})
        assert made.status_code in (200, 201), made.text
        body = made.json()
        return body["endpoint"], body["secret"]

    async def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        """The run's delivery attempts, oldest first."""
        got = await self.http.get(f"/api/v1/runs/{run_id}/deliveries")
        assert got.status_code == 200, got.text
        items: list[dict[str, Any]] = got.json()["items"]
        return sorted(items, key=lambda d: d["id"])

    async def settled_deliveries(self, run_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The deliveries of a completed run once its ``completed`` one is written (the server
        writes the attempt row when the answer arrives, just after the endpoint recorded the end)."""
        return await poll_until_async(
            lambda: self.deliveries(run_id),
            lambda ds: any(d["outcome"] == "completed" for d in ds),
            timeout=timeout,
            what=f"the completed delivery of run {run_id}",
            interval=0.05,
        )

    async def detail(self, run_id: str) -> dict[str, Any]:
        got = await self.http.get(f"/api/v1/runs/{run_id}/detail")
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def run(self, run_id: str, wait_for: str | None = None, timeout_ms: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"wait_for": wait_for, "timeout_ms": timeout_ms} if wait_for else {}
        got = await self.http.get(f"/api/v1/runs/{run_id}", params=params)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def wait_status(self, run_id: str, status: str, *, timeout: float, procs: WorkerProcs) -> dict[str, Any]:
        """Long-poll the run until ``status``; fail early when it ends otherwise or a process died."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            view = await self.run(run_id, wait_for=status, timeout_ms=max(1, int(min(left, 2.0) * 1000)))
            if view["status"] == status:
                return view
            assert view["status"] not in ("completed", "failed", "cancelled"), view
            dead = [c.name for c in procs.children if not c.alive() and c.proc.returncode not in (0, -9)]
            assert not dead, f"{dead} exited"
            if time.monotonic() >= deadline:
                raise AssertionError(f"run {run_id} is {view['status']} after {timeout:.0f}s, not {status}")

    async def wait_endpoint(
        self, endpoint_id: str, done: Callable[[dict[str, Any]], bool], *, timeout: float, what: str
    ) -> dict[str, Any]:
        return await poll_until_async(
            lambda: self.endpoint(endpoint_id), done, timeout=timeout, what=what, interval=0.05
        )
