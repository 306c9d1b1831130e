"""The chaos campaign: real ``aiki server`` and ``aiki worker`` processes, faults, and the verdict.

Two ``aiki server`` processes (IAM on, one shared secret) serve one database of the suite's own
PostgreSQL cluster (``cluster.py``); ``aiki worker`` processes, half on each server, run the
workload of ``workload.py``, whose tasks write a side-effect ledger. While runs are started at a
steady pace, faults are injected: worker SIGKILLs, a worker SIGSTOPped past its lease then resumed
(a zombie), server SIGKILLs (each restarted on its port), PostgreSQL restarts. Then every run must
end, and the ledger and the database are checked:

* ``stuck``: runs not terminal when the settle deadline passed;
* ``duplicate_tasks``: task keys (= one run, task address and seq) whose code ran more than once,
  not counting re-runs after an execution cut short by a fault: a SIGKILL or SIGSTOP of its
  process, a SIGKILL of the one server its worker talks to, or a PostgreSQL restart (nobody could
  heartbeat meanwhile), after the execution began and at most ``INTERRUPT_WINDOW_S`` after it
  ended (its result may not have reached the server yet). The platform may and must re-run those;
  the verdict prints how many there were, by cause;
* ``double_records``: a task result recorded twice for one (run, address, seq), or a parent with
  two children at one entry, in the database.

Waits are on states (process output, run statuses in the database) with deadlines; the only fixed
delays pace the faults and the starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from aiki import Client, client, worker
from aiki.worker_sdk._worker_connection import connect
from aiki.worker_sdk.errors import AikiError
from aiki.worker_sdk.protocol import RegisterWorkerRequest, SendEventRequest, VersionSpec
from tests.chaos.cluster import Cluster
from tests.chaos.workload import LEDGER_ENV, VERSIONS, WITH_PILL, mix_v1, read_ledger
from tests.e2e.procs import REPO_ROOT, Child, ServerChild, WorkerProcs, free_port, poll_until

T = TypeVar("T")

TERMINAL = ("completed", "failed", "cancelled")
# A fault on a process excuses the re-run of a task that ended at most this long before: its
# result may still have been on its way (a write retries while the server or database is down).
INTERRUPT_WINDOW_S = 10.0
# Lease settings the servers are started with (``aiki server`` reads them from the environment).
LEASE_TTL_ENV = "AIKI_LEASE_TTL"
HEARTBEAT_ENV = "AIKI_HEARTBEAT_INTERVAL"


@dataclass(frozen=True)
class Profile:
    """How big a campaign is."""

    name: str
    runs: int
    servers: int
    workers: int
    concurrency: int
    worker_kills: int
    server_kills: int
    pg_restarts: int
    zombies: int
    start_window_s: float
    """Runs are started evenly over this long; the faults are spread over it too."""
    settle_s: float
    """After the last start and fault, how long the runs have to end before the live ones count as stuck."""
    lease_ttl_s: float = 3.0
    heartbeat_s: float = 1.0
    pg_restart_mode: str = "fast"

    @property
    def faults(self) -> int:
        return self.worker_kills + self.server_kills + self.pg_restarts + self.zombies


PROFILES = {
    # A minute's worth, to try the harness itself.
    "smoke": Profile(
        name="smoke",
        runs=40,
        servers=2,
        workers=2,
        concurrency=10,
        worker_kills=3,
        server_kills=1,
        pg_restarts=1,
        zombies=1,
        start_window_s=20.0,
        settle_s=60.0,
    ),
    "quick": Profile(
        name="quick",
        runs=300,
        servers=2,
        workers=4,
        concurrency=10,
        worker_kills=20,
        server_kills=2,
        pg_restarts=3,
        zombies=1,
        start_window_s=75.0,
        settle_s=100.0,
    ),
    "long": Profile(
        name="long",
        runs=3000,
        servers=2,
        workers=6,
        concurrency=10,
        worker_kills=200,
        server_kills=20,
        pg_restarts=25,
        zombies=8,
        start_window_s=900.0,
        settle_s=300.0,
        pg_restart_mode="immediate",
    ),
}


def profile_from_env() -> Profile:
    name = os.environ.get("AIKI_CHAOS_PROFILE", "quick")
    if name not in PROFILES:
        raise ValueError(f"AIKI_CHAOS_PROFILE must be one of {sorted(PROFILES)}, got {name!r}")
    return PROFILES[name]


def seed_from_env() -> int:
    raw = os.environ.get("AIKI_CHAOS_SEED")
    return int(raw) if raw else random.randrange(1_000_000)


# -- processes ----------------------------------------------------------------------------------


@dataclass
class ServerSlot:
    index: int
    port: int
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class WorkerSlot:
    index: int
    server: ServerSlot
    child: Child | None = None
    serving: bool = False
    zombie: bool = False
    spawned: int = 0


@dataclass
class Fault:
    kind: str
    at: float
    """Epoch seconds the fault began (the signal sent, the restart asked for)."""
    done: float
    """Epoch seconds the fault ended (a restarted process serving, a stopped one resumed)."""
    pid: int | None = None
    leased: dict[str, int] = field(default_factory=dict)
    """Runs the faulted worker held just before: id -> revision."""
    leased_at: float = 0.0
    """Epoch seconds ``leased`` was read (a run may end between that and the fault)."""
    note: str = ""


class Fleet:
    """The servers and workers of one campaign, and a supervisor that keeps the workers' count."""

    def __init__(
        self,
        procs: WorkerProcs,
        *,
        db_url: str,
        ledger: Path,
        lease_ttl_s: float,
        heartbeat_s: float,
        target: str | list[str],
        servers: int,
        workers: int,
        concurrency: int,
    ) -> None:
        self.procs = procs
        self.db_url = db_url
        self.ledger = ledger
        self.targets = [target] if isinstance(target, str) else target
        self.concurrency = concurrency
        self.server_env = {
            "DATABASE_URL": db_url,
            LEASE_TTL_ENV: f"{lease_ttl_s:g}",
            HEARTBEAT_ENV: f"{heartbeat_s:g}",
        }
        self.servers = [ServerSlot(i, 0) for i in range(servers)]
        self.workers = [WorkerSlot(i, self.servers[i % servers]) for i in range(workers)]
        self.killed_pids: dict[int, float] = {}
        """pid -> epoch of its SIGKILL (by the suite or by itself: the poison pill)."""
        self.stopped_pids: dict[int, float] = {}
        """pid -> epoch of its SIGSTOP."""
        self.server_of: dict[int, int] = {}
        """Worker pid -> the index of the one server it talks to."""
        self.server_outages: list[tuple[int, float, float]] = []
        """(server index, SIGKILL epoch, epoch it served again)."""
        self.db_outages: list[tuple[float, float]] = []
        """(epoch a PostgreSQL restart was asked for, epoch it was done)."""
        self.deaths: list[tuple[int, int | None, float]] = []
        """Workers that died after they were serving: (pid, exit code, epoch the supervisor saw it)."""
        self.start_failures: list[str] = []
        """Workers that exited before serving (the last line of their output)."""
        self._supervisor: asyncio.Task[None] | None = None
        self.lease_ttl_ms: int | None = None

    # -- servers --

    async def start_server(self, slot: ServerSlot, timeout: float = 60.0) -> None:
        """Start ``aiki server`` on the slot's port (a free one the first time) and wait for /health."""
        for _ in range(3):
            port = slot.port or free_port()
            argv = ["-m", "aiki.cli", "server", "--host", "127.0.0.1", "--port", str(port), "--pool-size", "8"]
            env = {
                **self.server_env,
                "AIKI_LOG_LEVEL": "WARNING",
                "AIKI_SECRET_KEY": SECRET,
                "AIKI_EMAIL_VERIFICATION": "off",  # no SMTP here; mail is tested in tests/iam
                "AIKI_BASE_URL": f"http://127.0.0.1:{port}",
            }
            child = self.procs.spawn(f"server{slot.index}-{len(self.procs.children)}", argv, env=env)
            if await self.procs._wait_http(ServerChild(child, port), timeout):
                slot.port, slot.child = port, child
                await self.procs._provision_key(ServerChild(child, port))
                return
            if slot.port != 0:
                # Our own port, still held (a dying process): try again in a moment.
                await asyncio.sleep(0.5)
        raise AssertionError(f"server {slot.index} did not start:\n{child.stderr_text()}")

    async def kill_server(self, slot: ServerSlot) -> Fault:
        assert slot.child is not None
        pid = slot.child.pid
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(slot.child.proc.wait, 10)
        await self.start_server(slot)
        back = time.time()
        self.server_outages.append((slot.index, at, back))
        return Fault("server_kill", at, back, pid, note=f"server {slot.index} serving again after {back - at:.1f}s")

    def client(self, index: int) -> Client:
        """An SDK client of server ``index`` with the admin API key."""
        return client(url=self.servers[index].url, api_key=self.procs.env["AIKI_API_KEY"])

    # -- workers --

    def _spawn_worker(self, slot: WorkerSlot) -> None:
        slot.spawned += 1
        target = self.targets[slot.index % len(self.targets)]
        argv = ["-m", "aiki.cli", "worker", target, "--url", slot.server.url]
        argv += ["--concurrency", str(self.concurrency)]
        name = f"worker{slot.index}-{slot.spawned}"
        slot.child = self.procs.spawn(name, argv, env={LEDGER_ENV: str(self.ledger), "AIKI_LOG_LEVEL": "INFO"})
        self.server_of[slot.child.pid] = slot.server.index
        slot.serving = False

    def _check_worker(self, slot: WorkerSlot) -> None:
        child = slot.child
        if child is None:
            self._spawn_worker(slot)
            return
        if slot.zombie:
            return
        if child.alive():
            if not slot.serving and " serving " in child.stderr_text():
                slot.serving = True
            return
        if slot.serving:
            self.deaths.append((child.pid, child.proc.returncode, time.time()))
        else:
            tail = child.stderr_text().strip().splitlines()[-1:] or ["<no output>"]
            self.start_failures.append(f"{child.name} exit {child.proc.returncode}: {tail[0][:300]}")
        self._spawn_worker(slot)

    async def _supervise(self) -> None:
        while True:
            for slot in self.workers:
                self._check_worker(slot)
            await asyncio.sleep(0.1)

    def start_supervisor(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="chaos-supervisor")

    async def stop_supervisor(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor

    async def all_serving(self, timeout: float = 60.0) -> None:
        await poll_until(lambda: all(s.serving for s in self.workers), timeout=timeout, what="every worker serving")

    def serving_slots(self) -> list[WorkerSlot]:
        return [s for s in self.workers if s.serving and not s.zombie and s.child is not None and s.child.alive()]

    async def leased_by(self, pid: int) -> dict[str, int]:
        """Runs a worker process holds now: id -> revision (best effort: empty if the database does not answer)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                rows = await pg_fetch(
                    self.db_url,
                    "SELECT r.id, r.revision FROM runs r JOIN workers w ON w.id = r.lease_owner WHERE w.pid = $1",
                    pid,
                )
                return {r["id"]: r["revision"] for r in rows}
        return {}

    async def busiest(self, rng: random.Random) -> WorkerSlot:
        """A serving worker holding the most runs now (a fault there interrupts the most work)."""
        if not self.serving_slots():
            await poll_until(lambda: bool(self.serving_slots()), timeout=60, what="a serving worker")
        held: dict[int, int] = {}
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                rows = await pg_fetch(
                    self.db_url,
                    "SELECT w.pid, count(*) AS n FROM runs r JOIN workers w ON w.id = r.lease_owner GROUP BY w.pid",
                )
                held = {r["pid"]: r["n"] for r in rows}
        slots = self.serving_slots() or [s for s in self.workers if s.child is not None and not s.zombie]
        most = max(held.get(s.child.pid, 0) for s in slots if s.child is not None)
        return rng.choice([s for s in slots if s.child is not None and held.get(s.child.pid, 0) == most])

    async def kill_worker(self, slot: WorkerSlot) -> Fault:
        assert slot.child is not None
        pid = slot.child.pid
        leased_at = time.time()
        leased = await self.leased_by(pid)
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        self.killed_pids[pid] = at
        return Fault("worker_kill", at, at, pid, leased, leased_at)

    async def zombie(self, slot: WorkerSlot, lease_ttl_s: float) -> Fault:
        """SIGSTOP a worker until its runs were recovered (its leases expired), then SIGCONT it."""
        assert slot.child is not None
        pid = slot.child.pid
        slot.zombie = True
        try:
            leased_at = time.time()
            leased = await self.leased_by(pid)
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                return Fault("zombie", time.time(), time.time(), pid, note="the worker exited before its SIGSTOP")
            at = time.time()
            self.stopped_pids[pid] = at

            async def moved_on() -> bool:
                """None of the runs it held is still leased to it (recovered, or ended before the stop)."""
                rows = await pg_fetch(
                    self.db_url,
                    "SELECT count(*) AS n FROM runs r JOIN workers w ON w.id = r.lease_owner "
                    "WHERE w.pid = $1 AND r.id = ANY($2::text[])",
                    pid,
                    list(leased),
                )
                return rows[0]["n"] == 0

            # Past its lease for sure, then until each run it held was taken from it.
            await asyncio.sleep(lease_ttl_s * 1.5)
            deadline = time.monotonic() + lease_ttl_s * 10 + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    if await moved_on():
                        break
                await asyncio.sleep(0.2)
            os.kill(pid, signal.SIGCONT)
            return Fault("zombie", at, time.time(), pid, leased, leased_at, note=f"stopped {time.time() - at:.1f}s")
        finally:
            slot.zombie = False


SECRET = "chaos-server-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


async def pg_fetch(db_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url, timeout=5)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def pg_fetch_retrying(db_url: str, query: str, *args: Any, timeout: float = 60.0) -> list[asyncpg.Record]:
    """:func:`pg_fetch`, retried while PostgreSQL restarts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await pg_fetch(db_url, query, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


class ErrorLog:
    """Errors a client met (outages are expected): a count and the first message of each kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, str] = {}

    def add(self, error: AikiError) -> None:
        kind = f"{type(error).__name__}{'' if error.status is None else f'({error.status})'}"
        self.counts[kind] += 1
        self.samples.setdefault(kind, str(error)[:200])

    def lines(self, what: str) -> list[str]:
        if not self.counts:
            return []
        return [f"{what}: {_counts(self.counts)}"] + [f"  {k}: {v}" for k, v in self.samples.items()]


async def retrying(call: Callable[[int], Awaitable[T]], errors: ErrorLog, *, timeout: float = 120.0) -> T:
    """Call ``call(attempt)`` until it answers; log each error (outages are expected)."""
    deadline = time.monotonic() + timeout
    attempt, delay = 0, 0.2
    while True:
        try:
            return await call(attempt)
        except AikiError as e:
            errors.add(e)
            if time.monotonic() > deadline:
                raise
        attempt += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def migrate(db_url: str) -> None:
    """``aiki migrate apply`` on the campaign's database."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiki.cli",
        "migrate",
        "apply",
        "--database-url",
        db_url,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")


async def create_database(cluster: Cluster, prefix: str) -> str:
    name = f"{prefix}_{random.randrange(16**8):08x}"
    conn = await asyncpg.connect(cluster.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = cluster.url(name)
    await migrate(url)
    return url


async def registered_lease_ttl_ms(api: Client) -> int:
    """The lease TTL the server really uses: what it tells a registering worker.

    The probe registers the campaign's versions too, so starts are accepted before a worker is up.
    """
    specs: list[VersionSpec] = []
    for versions in (VERSIONS, WITH_PILL):
        specs += [s for s in worker(versions).specs() if s not in specs]
    response = await connect(api).register_worker(
        RegisterWorkerRequest(worker_id="chaos-probe", host="chaos", versions=specs)
    )
    return response.lease_ttl_ms


# -- the campaign -------------------------------------------------------------------------------


@dataclass
class Verdict:
    runs: int
    completed: int
    failed: int
    stuck: int
    duplicate_tasks: int
    double_records: int
    lost_effects: int
    lines: list[str]
    """What to print: the parameters, one line per fault with its recovery times, the summary."""

    @property
    def summary(self) -> str:
        return (
            f"runs={self.runs} completed={self.completed} failed={self.failed} stuck={self.stuck} "
            f"duplicate_tasks={self.duplicate_tasks} double_records={self.double_records}"
        )


class Campaign:
    def __init__(self, cluster: Cluster, fleet: Fleet, profile: Profile, seed: int) -> None:
        self.cluster = cluster
        self.fleet = fleet
        self.profile = profile
        self.rng = random.Random(seed)
        self.seed = seed
        self.faults: list[Fault] = []
        self.run_ids: dict[int, str] = {}
        self.errors = ErrorLog()
        self.clients: list[Client] = []
        self.began = 0.0

    def _client(self, n: int) -> Client:
        return self.clients[n % len(self.clients)]

    async def _start_one(self, n: int) -> None:
        async def start(attempt: int) -> str:
            handle = await mix_v1.with_options(reference_id=f"chaos-{n}").start(self._client(n + attempt), n)
            return handle.id

        run_id = await retrying(start, self.errors)
        self.run_ids[n] = run_id
        # The event arrives before the run waits for it, or while it waits.
        await asyncio.sleep(self.rng.uniform(0.0, 4.0))

        async def poke(attempt: int) -> None:
            await self._client(n + attempt).send_event(run_id, "poke", SendEventRequest(reference_id="poke"))

        await retrying(poke, self.errors)

    async def _start_all(self) -> None:
        interval = self.profile.start_window_s / self.profile.runs
        async with asyncio.TaskGroup() as group:
            for n in range(self.profile.runs):
                group.create_task(self._start_one(n))
                await asyncio.sleep(interval)

    async def _inject_faults(self) -> None:
        p = self.profile
        kinds = ["worker_kill"] * p.worker_kills + ["server_kill"] * p.server_kills + ["pg_restart"] * p.pg_restarts
        kinds += ["zombie"] * p.zombies
        self.rng.shuffle(kinds)
        # Leave the first and last stretch of the window alone: faults land on a loaded system.
        spacing = p.start_window_s * 0.9 / max(1, len(kinds))
        zombies: list[asyncio.Task[Fault]] = []
        next_at = time.monotonic() + p.start_window_s * 0.05
        server_turn = 0
        pg_turn = 0
        for kind in kinds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += spacing
            if kind == "pg_restart":
                at = time.time()
                # Every other restart keeps the database down for longer than the lease TTL: the
                # leases of live workers must survive it (none of their tasks may run again).
                down_s = p.lease_ttl_s * 1.5 if pg_turn % 2 else 0.0
                pg_turn += 1
                took = await asyncio.to_thread(self.cluster.restart, p.pg_restart_mode, down_s)
                self.fleet.db_outages.append((at, time.time()))
                note = f"restart -m {p.pg_restart_mode} {took:.1f}s"
                if down_s:
                    note += f" (kept down {down_s:g}s, past the lease TTL)"
                self.faults.append(Fault(kind, at, time.time(), note=note))
            elif kind == "server_kill":
                slot = self.fleet.servers[server_turn % len(self.fleet.servers)]
                server_turn += 1
                self.faults.append(await self.fleet.kill_server(slot))
            else:
                if kind == "worker_kill":
                    for _ in range(5):
                        slot = await self.fleet.busiest(self.rng)
                        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile: pick another
                            self.faults.append(await self.fleet.kill_worker(slot))
                            break
                else:
                    slot = await self.fleet.busiest(self.rng)
                    zombies.append(asyncio.create_task(self.fleet.zombie(slot, p.lease_ttl_s)))
        for task in zombies:
            self.faults.append(await task)

    async def _wait_settled(self) -> list[asyncpg.Record]:
        deadline = time.monotonic() + self.profile.settle_s
        while True:
            rows = await pg_fetch_retrying(
                self.fleet.db_url,
                "SELECT id, status, recoveries, error, reference_id FROM runs WHERE workflow_name = $1",
                mix_v1.name,
            )
            if len(rows) >= self.profile.runs and all(r["status"] in TERMINAL for r in rows):
                return rows
            if time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.5)

    async def run(self) -> Verdict:
        self.clients = [
            client(url=s.url, api_key=self.fleet.procs.env["AIKI_API_KEY"], timeout=timedelta(seconds=15))
            for s in self.fleet.servers
        ]
        try:
            self.began = time.time()
            starts = asyncio.create_task(self._start_all())
            faults = asyncio.create_task(self._inject_faults())
            for task in (starts, faults):
                await task
            fault_end = time.time()
            rows = await self._wait_settled()
            settled = time.time()
        finally:
            for c in self.clients:
                await c.close()
        return await self._verdict(rows, fault_end, settled)

    # -- the verdict --

    async def _verdict(self, rows: list[asyncpg.Record], fault_end: float, settled: float) -> Verdict:
        p, fleet = self.profile, self.fleet
        db = fleet.db_url
        statuses = Counter(r["status"] for r in rows)
        stuck_rows = [r for r in rows if r["status"] not in TERMINAL]
        lines = [
            f"chaos profile={p.name} seed={self.seed} lease_ttl={fleet.lease_ttl_ms}ms heartbeat={p.heartbeat_s:g}s "
            f"servers={p.servers} workers={p.workers}x{p.concurrency} runs={p.runs} faults={len(self.faults)} "
            f"campaign={fault_end - self.began:.0f}s settled_after={settled - fault_end:.0f}s",
        ]
        history = await pg_fetch_retrying(
            db, "SELECT run_id, from_status, to_status, created_at FROM run_history ORDER BY id"
        )
        finished = sorted(
            r["finished_at"] / 1000
            for r in await pg_fetch_retrying(db, "SELECT finished_at FROM runs WHERE status = 'completed'")
        )
        reclaims: dict[str, list[float]] = defaultdict(list)
        for h in history:
            if (h["from_status"], h["to_status"]) == ("queued", "running") or h["to_status"] in TERMINAL:
                reclaims[h["run_id"]].append(h["created_at"] / 1000)
        for i, f in enumerate(sorted(self.faults, key=lambda f: f.at), 1):
            parts = [f"fault {i:2d} {f.kind:<11} at +{f.at - self.began:5.1f}s"]
            if f.pid is not None:
                parts.append(f"pid={f.pid}")
            if f.note:
                parts.append(f.note)
            if f.kind in ("worker_kill", "zombie"):
                waits = [next((t for t in reclaims[run_id] if t > f.leased_at), None) for run_id in f.leased]
                if not f.leased:
                    parts.append("held no run")
                elif any(w is None for w in waits):
                    lost = [run_id for run_id, w in zip(f.leased, waits, strict=True) if w is None]
                    parts.append(f"held {len(f.leased)} runs, {len(lost)} never re-claimed ({', '.join(lost)})")
                else:
                    last = max(0.0, max(w for w in waits if w is not None) - f.at)
                    parts.append(f"held {len(f.leased)} runs, all re-claimed or ended {last:.1f}s after")
            nxt = next((t for t in finished if t > f.done), None)
            parts.append(
                "no run completed after it" if nxt is None else f"next completion {nxt - f.at:.1f}s after the fault"
            )
            lines.append(" ".join(parts))
            if f.kind in ("worker_kill", "zombie"):
                for run_id in [r for r in f.leased if not any(t > f.leased_at for t in reclaims[r])][:3]:
                    steps = [
                        f"{h['from_status']}->{h['to_status']}@{h['created_at'] / 1000 - self.began:+.1f}s"
                        for h in history
                        if h["run_id"] == run_id and h["created_at"] / 1000 > f.at - 5
                    ]
                    lines.append(f"    run {run_id} around the fault: {' '.join(steps)}")

        duplicates, dup_detail = self._duplicates()
        double_records = await self._double_records()
        lost = await self._lost_effects()
        verdict = Verdict(
            runs=len(rows),
            completed=statuses["completed"],
            failed=statuses["failed"] + statuses["cancelled"],
            stuck=len(stuck_rows),
            duplicate_tasks=duplicates,
            double_records=double_records,
            lost_effects=len(lost),
            lines=lines,
        )
        lines += self.errors.lines("client errors while starting runs / sending events (retried)")
        if fleet.start_failures:
            lines.append(f"workers that exited before serving: {len(fleet.start_failures)}")
            lines += [f"  {line}" for line in fleet.start_failures[:10]]
        for r in stuck_rows[:20]:
            lines.append(f"stuck: run {r['id']} ({r['reference_id']}) {r['status']} recoveries={r['recoveries']}")
        for r in [r for r in rows if r["status"] in ("failed", "cancelled")][:20]:
            lines.append(f"failed: run {r['id']} ({r['reference_id']}) {r['status']}: {str(r['error'])[:300]}")
        lines += dup_detail[:20]
        lines += [f"lost side effect: {key}" for key in lost[:20]]
        lines.append(verdict.summary)
        return verdict

    def _interruption(self, pid: int, began: float, ended: float | None) -> str | None:
        """What cut an execution short, if anything: a fault on its process, its server or the database.

        A fault counts if it came after the execution began and at most ``INTERRUPT_WINDOW_S`` after
        it ended (its result may not have reached the server yet).
        """
        fleet = self.fleet
        latest = None if ended is None else ended + INTERRUPT_WINDOW_S

        def hits(at: float) -> bool:
            return at >= began and (latest is None or at <= latest)

        if pid in fleet.killed_pids and hits(fleet.killed_pids[pid]):
            return "worker SIGKILL"
        if pid in fleet.stopped_pids and hits(fleet.stopped_pids[pid]):
            return "worker SIGSTOP"
        server = fleet.server_of.get(pid)
        for index, down, back in fleet.server_outages:
            # The worker could not report while its server was down: its leases may have expired.
            if index == server and back >= began and (latest is None or down <= latest):
                return "its server's SIGKILL"
        # Not a PostgreSQL restart: nobody can heartbeat while it is down, and the lease-recovery
        # pass gives workers a lease TTL once it is back (issue 10), so no lease expires for it.
        return None

    def _duplicates(self) -> tuple[int, list[str]]:
        """Task keys executed more than once where an earlier execution was not interrupted by a fault."""
        executions: dict[str, list[tuple[int, float, float | None]]] = defaultdict(list)
        open_: dict[tuple[str, int], int] = {}
        for line in read_ledger(self.fleet.ledger):
            if line.event == "start":
                open_[(line.key, line.pid)] = len(executions[line.key])
                executions[line.key].append((line.pid, line.at, None))
            elif line.event == "end":
                index = open_.pop((line.key, line.pid), None)
                if index is not None:
                    pid, began, _ = executions[line.key][index]
                    executions[line.key][index] = (pid, began, line.at)

        count, detail = 0, []
        excused: Counter[str] = Counter()
        for key, runs in executions.items():
            if len(runs) < 2:
                continue
            # Every execution but the last must have been cut short by a fault.
            causes = [self._interruption(*e) for e in runs[:-1]]
            if all(causes):
                excused.update(c for c in causes if c)
                continue
            count += 1
            described = ", ".join(
                f"pid {pid} {began - self.began:+.1f}s..{'?' if ended is None else f'{ended - self.began:+.1f}s'}"
                + (f" ({cause})" if cause else "")
                for (pid, began, ended), cause in zip(runs, [*causes, None], strict=True)
            )
            detail.append(f"duplicate task {key}: {described}")
        if excused:
            detail.insert(0, "task re-runs after an interrupted execution (allowed): " + _counts(excused))
        return count, detail

    async def _double_records(self) -> int:
        db = self.fleet.db_url
        tasks = await pg_fetch_retrying(
            db,
            "SELECT run_id, address, seq FROM tasks WHERE status <> 'discarded' "
            "GROUP BY run_id, address, seq HAVING count(*) > 1",
        )
        children = await pg_fetch_retrying(
            db,
            "SELECT parent_run_id, parent_address, parent_seq FROM runs WHERE parent_run_id IS NOT NULL "
            "GROUP BY parent_run_id, parent_address, parent_seq HAVING count(*) > 1",
        )
        return len(tasks) + len(children)

    async def _lost_effects(self) -> list[str]:
        """Keys of tasks the database says completed whose side effect never finished in the ledger."""
        ended = {line.key for line in read_ledger(self.fleet.ledger) if line.event == "end"}
        rows = await pg_fetch_retrying(self.fleet.db_url, "SELECT input FROM tasks WHERE status = 'completed'")
        return sorted(key for r in rows if (key := json.loads(r["input"])) not in ended)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counter.most_common())


ARTIFACTS = REPO_ROOT / "test-artifacts" / "chaos"


def report(name: str, lines: list[str], capsys: Any) -> None:
    """Print a campaign's lines on the terminal (even when the test passes); keep them in test-artifacts/chaos/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    (ARTIFACTS / f"{name}.txt").write_text(text + "\n")
    print(text)
    with capsys.disabled():
        print("\n" + text, flush=True)


async def start_fleet(fleet: Fleet, *, max_lease_ttl_s: float = 10.0) -> None:
    """Start the servers (the first provisions the API key), check the lease TTL they use, start the workers.

    Fails if the servers do not use the lease TTL given (the campaign would take hours with the
    30 s default).
    """
    for slot in fleet.servers:
        await fleet.start_server(slot)
    async with client(url=fleet.servers[0].url, api_key=fleet.procs.env["AIKI_API_KEY"]) as api:
        fleet.lease_ttl_ms = await registered_lease_ttl_ms(api)
    if fleet.lease_ttl_ms > max_lease_ttl_s * 1000:
        raise AssertionError(f"the servers use a lease TTL of {fleet.lease_ttl_ms} ms despite {LEASE_TTL_ENV}")
    fleet.start_supervisor()
    await fleet.all_serving()
