"""Test-side helpers of the end-to-end tests: processes, bounded polling, a client-only server.

Every process a test starts goes through :meth:`WorkerProcs.spawn`, which adds
:attr:`WorkerProcs.env` (e.g. an API key once the server requires one) to its environment:

* :meth:`WorkerProcs.start` — ``python -m tests.e2e.worker_proc``: an embedded server and worker;
* :meth:`WorkerProcs.start_server` — ``aiki server`` (the real CLI) on a free port;
* :meth:`WorkerProcs.start_cli_worker` — ``aiki worker module:attr --url ...`` (the real CLI).

Children run from the repository root and die with the test process (Linux). Their stderr goes to
a file under the test's ``tmp_path``; :meth:`WorkerProcs.dump` prints them all (the ``procs``
fixture does at teardown, so pytest shows them beside a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import asyncpg
import httpx

from aiki import Client, client, database, server
from tests.e2e.workflows import BLOCK_ENV, FSYNC_ENV, LEDGER_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_INTERVAL = 0.02
# `aiki server` runs with IAM on: every server of a test shares this secret (and so its API keys).
SERVER_SECRET = "e2e-server-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
T = TypeVar("T")


@dataclass
class Child:
    """One worker process."""

    name: str
    proc: subprocess.Popen[bytes]
    ready_file: Path
    stderr_path: Path
    _stderr: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.stderr_path}: {exc}>"


@dataclass
class ServerChild:
    """One ``aiki server`` process and where it listens."""

    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.pid


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG survives exec: the child gets SIGKILL if the test process dies.
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkerProcs:
    """Starts the processes of one test (servers, workers) and makes sure none outlives it.

    Attributes:
        env: extra environment of every process started from now on (API keys, settings).
    """

    def __init__(self, tmp_path: Path, db_url: str, ledger: Path) -> None:
        self.tmp_path = tmp_path
        self.db_url = db_url
        self.ledger = ledger
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self._provisioning = asyncio.Lock()

    def spawn(self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> Child:
        """Start ``python <argv>`` from the repository root: the one way tests start a process.

        The environment is this process's, plus the ledger's path, :attr:`env`, then ``env``.
        """
        ready_file = self.tmp_path / f"{name}.ready"
        stderr_path = self.tmp_path / f"{name}.stderr"
        full_env = dict(os.environ)
        full_env.pop(BLOCK_ENV, None)
        full_env.update({LEDGER_ENV: str(self.ledger), "PYTHONUNBUFFERED": "1"})
        full_env.update(self.env)
        full_env.update(env or {})
        stderr = stderr_path.open("wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except BaseException:
            stderr.close()
            raise
        child = Child(name, proc, ready_file, stderr_path, stderr)
        self.children.append(child)
        return child

    def client(self, srv: ServerChild) -> Client:
        """An SDK client of ``srv`` with the processes' API key (``env["AIKI_API_KEY"]``), if any."""
        return client(url=srv.url, api_key=self.env.get("AIKI_API_KEY"))

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        """A raw HTTP client sending the processes' API key, if any."""
        key = self.env.get("AIKI_API_KEY")
        return httpx.AsyncClient(headers={"authorization": f"Bearer {key}"} if key else {}, **kwargs)

    async def start_server(
        self,
        *,
        pool_size: int = 5,
        redis_url: str | None = None,
        pg_listen: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> ServerChild:
        """Start ``aiki server`` on a free port and wait until it answers ``/health``."""
        for _ in range(3):
            port = free_port()
            argv = ["-m", "aiki.cli", "server", "--port", str(port), "--database-url", self.db_url]
            argv += ["--pool-size", str(pool_size)]
            if redis_url is not None:
                argv += ["--redis-url", redis_url]
            if not pg_listen:
                argv.append("--no-pg-listen")
            extra = {
                "AIKI_LOG_LEVEL": "INFO",
                "AIKI_SECRET_KEY": SERVER_SECRET,
                "AIKI_EMAIL_VERIFICATION": "off",  # no SMTP here; mail is tested in tests/iam
                "AIKI_BASE_URL": f"http://127.0.0.1:{port}",
                **(env or {}),
            }
            name = f"server{sum(1 for c in self.children if c.name.startswith('server')) + 1}"
            child = self.spawn(name, argv, env=extra)
            server_child = ServerChild(child, port)
            if await self._wait_http(server_child, timeout):
                await self._provision_key(server_child)
                return server_child
            # Another process took the port between our probe and the server's bind: try another.
        raise AssertionError(f"aiki server did not start:\n{child.stderr_text()}")

    async def _provision_key(self, srv: ServerChild) -> None:
        """Sign up a team and give every later process (and :meth:`client`) an admin key of its namespace."""
        async with self._provisioning:
            if "AIKI_API_KEY" in self.env:
                return
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
                signed = await http.post(
                    "/api/v1/auth/signup", json={"email": "e2e@example.com", "password": "correct horse battery staple"}
                )
                assert signed.status_code == 201, signed.text
                namespace_id = signed.json()["namespace"]["id"]
                # The session cookie is `Secure` and this is plain http: send it by hand.
                cookie = signed.headers["set-cookie"].split(";")[0]
                made = await http.post(
                    f"/api/v1/namespaces/{namespace_id}/api-keys",
                    json={"name": "e2e", "role": "admin"},
                    # Unsafe requests made with a session come from the server's origin (aiki.api.auth).
                    headers={"cookie": cookie, "origin": srv.url},
                )
                assert made.status_code == 201, made.text
                self.env["AIKI_API_KEY"] = made.json()["key"]

    async def _wait_http(self, srv: ServerChild, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=srv.url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not srv.child.alive():
                    if "could not listen" in srv.child.stderr_text():
                        return False
                    raise AssertionError(
                        f"{srv.child.name} exited with {srv.child.proc.returncode}:\n{srv.child.stderr_text()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health")).status_code == 200:
                        return True
                await asyncio.sleep(POLL_INTERVAL * 5)
        raise AssertionError(f"{srv.child.name} did not answer /health within {timeout}s:\n{srv.child.stderr_text()}")

    async def start_cli_worker(
        self,
        target: str,
        server_url: str,
        *,
        concurrency: int = 10,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Child:
        """Start ``aiki worker target --url server_url`` and wait until it registered."""
        name = f"cliworker{sum(1 for c in self.children if c.name.startswith('cliworker')) + 1}"
        argv = ["-m", "aiki.cli", "worker", target, "--url", server_url, "--concurrency", str(concurrency)]
        child = self.spawn(name, argv, env={"AIKI_LOG_LEVEL": "INFO", **(env or {})})

        def registered() -> bool:
            if " serving " in child.stderr_text():
                return True
            if not child.alive():
                raise AssertionError(f"{name} exited with {child.proc.returncode}:\n{child.stderr_text()}")
            return False

        await poll_until(registered, timeout=timeout, what=f"{name} registered")
        return child

    def start(
        self,
        *,
        workflows: str,
        lease_ttl: float,
        max_recoveries: int = 10,
        concurrency: int = 10,
        pool_size: int = 5,
        block_task: str | None = None,
        fsync: bool = True,
        log_level: str = "INFO",
        log_http: bool = False,
    ) -> Child:
        name = f"worker{sum(1 for c in self.children if c.name.startswith('worker')) + 1}"
        env = {FSYNC_ENV: "1" if fsync else "0"}
        if block_task is not None:
            env[BLOCK_ENV] = block_task
        argv = [
            "-m",
            "tests.e2e.worker_proc",
            "--db-url",
            self.db_url,
            "--ready-file",
            str(self.tmp_path / f"{name}.ready"),
            "--workflows",
            workflows,
            "--lease-ttl",
            str(lease_ttl),
            "--max-recoveries",
            str(max_recoveries),
            "--concurrency",
            str(concurrency),
            "--pool-size",
            str(pool_size),
            "--log-level",
            log_level,
            "--parent-pid",
            str(os.getpid()),
            *(["--log-http"] if log_http else []),
        ]
        return self.spawn(name, argv, env=env)

    async def wait_ready(self, child: Child, timeout: float = 30.0) -> None:
        """Wait until the child registered its worker (it wrote its ready file)."""

        def ready() -> bool:
            if child.ready_file.exists():
                return True
            if not child.alive():
                raise AssertionError(
                    f"{child.name} (pid {child.pid}) exited with {child.proc.returncode} before it was "
                    f"ready:\n{child.stderr_text()}"
                )
            return False

        await poll_until(ready, timeout=timeout, what=f"{child.name} ready")

    async def wait_exit(self, child: Child, timeout: float) -> int:
        """Wait for the child to exit; its exit code (negative: killed by that signal)."""
        await poll_until(lambda: not child.alive(), timeout=timeout, what=f"{child.name} exit")
        code = child.proc.returncode
        assert code is not None
        return code

    def kill(self, child: Child) -> None:
        if child.alive():
            os.kill(child.pid, signal.SIGKILL)
        child.proc.wait(timeout=10)

    def cleanup(self, grace: float = 5.0) -> None:
        """SIGTERM every live child, SIGKILL what is left after ``grace``; reap all of them."""
        for child in self.children:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                child.proc.wait(timeout=10)
            child._stderr.close()

    def dump(self) -> None:
        for child in self.children:
            print(f"===== {child.name} (pid {child.pid}, exit {child.proc.returncode}) stderr =====")
            print(child.stderr_text()[-20_000:])
        if self.ledger.exists():
            lines = self.ledger.read_text().splitlines()
            print(f"===== ledger ({len(lines)} lines, last 60) =====")
            print("\n".join(lines[-60:]))


async def poll_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = POLL_INTERVAL
) -> None:
    """Poll ``predicate`` every ``interval`` seconds, for at most ``timeout`` seconds.

    For conditions with no event to await across processes (a file's content, a process exit).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(interval)


async def poll_until_async(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Like :func:`poll_until` for an async read (e.g. the database); returns the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(interval)


@dataclass
class Observer:
    """The test process's own view: an embedded server without a worker, its client, raw HTTP."""

    client: Client
    http: httpx.AsyncClient
    server: Any

    async def run_json(self, run_id: str) -> dict[str, Any]:
        resp = await self.http.get(f"/api/v1/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def history(self, run_id: str) -> list[dict[str, Any]]:
        resp = await self.http.get(f"/api/v1/runs/{run_id}/history")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
        return items


@contextlib.asynccontextmanager
async def observer(
    db_url: str, *, lease_ttl: float, max_recoveries: int = 10, pool_size: int = 5
) -> AsyncIterator[Observer]:
    """A server (runtime started: LISTEN for cross-process wake-ups, timers) and clients on ``db_url``.

    Its settings match the worker processes': runs started here carry its ``max_recoveries``.
    """
    aiki_server = server(
        db=database(url=db_url, migrate=False, pool_size=pool_size),
        lease_ttl=timedelta(seconds=lease_ttl),
        max_recoveries=max_recoveries,
    )
    await aiki_server.runtime.start()
    aiki_client = client(handler=aiki_server.handler)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=aiki_server.handler), base_url="http://aiki")
    try:
        yield Observer(aiki_client, http, aiki_server)
    finally:
        await aiki_server.runtime.stop()
        await aiki_client.close()
        await http.aclose()
        await aiki_server.db.dispose()


async def all_of(coros: Iterable[Awaitable[T]], limit: int | None = None) -> list[T]:
    """Await all, at most ``limit`` at once; on the first error cancel the rest (no stragglers)."""
    gate = asyncio.Semaphore(limit) if limit else None

    async def one(coro: Awaitable[T]) -> T:
        if gate is None:
            return await coro
        async with gate:
            return await coro

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(c)) for c in coros]
    return [t.result() for t in tasks]


async def pg_fetch(db_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on its own connection (plain ``postgresql://`` URL)."""
    conn = await asyncpg.connect(db_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()
