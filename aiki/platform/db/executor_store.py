"""The database side of an executor's writes, behind one interface with an implementation per database.

A service asks the store, never which database it runs on. The PostgreSQL store does the hot
writes (claim, record a task, end a run, sleep) in one statement each (``postgres/executor.py``);
the SQLite store does them as short transactions (``sqlite/executor.py``). A write that needs the
general path (the run is paused, a child, fenced ...) returns None from its one-statement method
(SQLite's always does) and the service runs the general version in :meth:`ExecutorStore.transaction`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from aiki.platform.db.catalog_repo import WorkerHeartbeats
from aiki.platform.db.raw import Row
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.statuses import RUNNING
from aiki.platform.db.steps_repo import StepRepository

if TYPE_CHECKING:
    from aiki.platform.db.engine import Database


class Recorded(NamedTuple):
    """What recording a task attempt found."""

    held: bool
    """The run is still held at the revision (False: the executor is fenced; nothing written)."""
    recorded: bool
    """The entry was written (False: a finished entry already holds its address and seq)."""
    paused: bool
    """A pause of the run is requested: the executor starts nothing new."""


class Claimed(NamedTuple):
    """What a claim took."""

    runs: list[Row]
    """The runs claimed (``id, revision, workflow_name, version, attempt, input, retry, ...``)."""
    skipped: bool
    """Claimable runs were passed over (held by another transaction): look again soon."""
    state: dict[str, dict[str, list[Row]]]
    """The replay state of each run claimed."""


@dataclass(frozen=True)
class Tx:
    """The repositories of one transaction of the general path."""

    runs: RunRepository
    steps: StepRepository


class ExecutorStore(Protocol):
    """The writes of the worker protocol for one namespace."""

    announces_status_changes: bool
    """The database announces every run status change itself (PostgreSQL's trigger); else the
    service that changes a status announces it (``run:<id>``)."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """One transaction for the general path (its reads lock the rows they fence on)."""
        ...

    async def exists(self, run_id: str) -> bool: ...

    async def record_task(
        self, run_id: str, revision: int, task: Mapping[str, Any], lease_until: int, extend_below: int
    ) -> Recorded:
        """Record a task attempt (``task``: its ``tasks`` row) for a run held at ``revision``, and
        extend the lease to ``lease_until`` when it ends before ``extend_below``."""
        ...

    async def recorded_task(self, run_id: str, address: str, seq: int) -> Row | None:
        """The entry holding ``(address, seq)`` (``status, attempts, output``), if any."""
        ...

    async def finish(
        self,
        run_id: str,
        revision: int,
        values: Mapping[str, Any],
        reason: str | None,
        now: int,
        task: Mapping[str, Any] | None = None,
    ) -> Row | None:
        """One statement: a top-level run ``running`` at ``revision`` takes ``values`` (``status``
        among them) and a history row, with ``task`` recorded first (the row carries ``recorded``).
        None: take the general path (fenced, a child, an entry already recorded, or no such path)."""
        ...

    async def sleep(
        self, run_id: str, revision: int, sleep: Mapping[str, Any], grace_ms: int | None, reason: str, now: int
    ) -> int | None:
        """One statement: a run ``running`` at ``revision`` starts ``sleep`` (id, name, seq,
        wake_at); held when ``grace_ms`` is set. Returns the sleep's end; None: the general path."""
        ...

    async def resume_held_sleep(self, run_id: str, revision: int, lease_until: int, reason: str, now: int) -> bool:
        """One statement: a run ``sleeping`` at ``revision`` is ``running`` again. False: the general path."""
        ...

    async def sleep_wake_at(self, run_id: str, name: str, seq: int) -> int | None:
        """When sleep ``(name, seq)`` ends, if it is still sleeping."""
        ...

    async def claim(
        self,
        versions: Sequence[tuple[str, str]],
        pools: Sequence[str],
        limit: int,
        worker_id: str,
        now: int,
        lease_until: int,
    ) -> Claimed:
        """Lease up to ``limit`` queued runs to ``worker_id`` and read their replay state."""
        ...

    async def heartbeat(
        self, worker_id: str, held: Mapping[str, int], now: int, lease_until: int
    ) -> tuple[list[str], list[str]]:
        """The worker was seen; extend the leases it holds. Returns the ids fenced, and those a
        pause is requested of."""
        ...

    async def held_states(self, run_ids: Sequence[str]) -> list[Row]:
        """``id, revision, status, lease_owner`` of these runs (those that exist)."""
        ...

    async def requeue(self, claimed: Sequence[tuple[str, int]], worker_id: str, reason: str, now: int) -> None:
        """Runs ``(id, revision)`` claimed by ``worker_id`` go back to the queue, as if never claimed."""
        ...

    async def refence(self, run_id: str, worker_id: str, revision: int, now: int, lease_until: int) -> int | None:
        """A run ``running`` at ``revision`` and leased to ``worker_id`` moves to the next revision
        (fencing every write of the execution at ``revision``) and stays leased to it, until
        ``lease_until``. Returns the new revision; None when the run moved on (nothing changed).
        A push delivery is retried this way: the new attempt cannot be confused with the old one."""
        ...

    async def delivered(
        self, run_id: str, revision: int, worker_id: str, reason: str, now: int, attempt: Mapping[str, Any]
    ) -> tuple[bool, bool]:
        """A push delivery of the run at ``revision`` was answered: write its attempt row
        (``endpoint_deliveries`` values; not when its endpoint is gone) and release the run if
        ``worker_id`` still holds it at ``revision`` (as :meth:`RunRepository.release`). Returns
        whether the row was written and whether the run was released. One statement where the
        database allows it (a delivery's answer is on the hot path of push)."""
        ...

    async def replay_state(self, run_ids: Sequence[str]) -> ReplayState:
        """The replay state of these runs (as a claim reads it), e.g. after :meth:`refence`."""
        ...


class SharedExecutorStore:
    """What both stores do alike (their repositories hide the rest)."""

    announces_status_changes = False

    def __init__(self, db: Database, namespace_id: str) -> None:
        self.db = db
        self.namespace_id = namespace_id

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.db.raw_transaction() as conn:
            yield Tx(RunRepository(conn, self.namespace_id), StepRepository(conn, self.namespace_id))

    async def exists(self, run_id: str) -> bool:
        async with self.db.autocommit() as conn:
            return await RunRepository(conn, self.namespace_id).exists(run_id)

    async def recorded_task(self, run_id: str, address: str, seq: int) -> Row | None:
        async with self.db.autocommit() as conn:
            return await StepRepository(conn, self.namespace_id).get_task(run_id, address, seq)

    async def sleep_wake_at(self, run_id: str, name: str, seq: int) -> int | None:
        async with self.db.autocommit() as conn:
            return await StepRepository(conn, self.namespace_id).sleep_wake_at(run_id, name, seq)

    async def heartbeat(
        self, worker_id: str, held: Mapping[str, int], now: int, lease_until: int
    ) -> tuple[list[str], list[str]]:
        async with self.db.raw_transaction() as conn:
            await WorkerHeartbeats(conn, self.namespace_id).seen(worker_id, now)
            return await RunRepository(conn, self.namespace_id).heartbeat(worker_id, held, now, lease_until)

    async def held_states(self, run_ids: Sequence[str]) -> list[Row]:
        async with self.db.autocommit() as conn:
            return await RunRepository(conn, self.namespace_id).held_states(run_ids)

    async def requeue(self, claimed: Sequence[tuple[str, int]], worker_id: str, reason: str, now: int) -> None:
        async with self.db.raw_transaction() as conn:
            runs = RunRepository(conn, self.namespace_id)
            for run_id, revision in claimed:
                await runs.requeue_unstarted(run_id, worker_id, reason, now, revision=revision)

    async def refence(self, run_id: str, worker_id: str, revision: int, now: int, lease_until: int) -> int | None:
        async with self.db.autocommit() as conn:
            new: int | None = await conn.fetchval(
                "UPDATE runs SET revision = revision + 1, updated_at = $5, wake_at = $6 "
                f"WHERE id = $1 AND namespace_id = $2 AND revision = $3 AND lease_owner = $4 AND status = {RUNNING} "
                "RETURNING revision",
                run_id,
                self.namespace_id,
                revision,
                worker_id,
                now,
                lease_until,
            )
        return new


EMPTY_STATE: dict[str, list[Any]] = {"tasks": [], "events": [], "sleeps": [], "wait_timeouts": [], "children": []}

ReplayState = dict[str, dict[str, list[Row]]]
"""Per run: its live task entries, events, sleeps, wait timeouts and children, in replay order."""
ReadState = Callable[[list[str], list[str]], Awaitable[ReplayState]]
"""Reads the replay state of runs (all of them: events) and of those executed before (the rest)."""


def empty_state(run_ids: Sequence[str]) -> ReplayState:
    """A state with nothing in it for each of ``run_ids``."""
    return {run_id: {kind: [] for kind in EMPTY_STATE} for run_id in run_ids}


async def claimed_state(claimed: list[Row], read: ReadState) -> ReplayState:
    """The replay state of the runs ``claimed``, reading only what can exist."""
    if not claimed:
        return {}
    # Revision 1 is the first claim ever (every claim bumps it): such a run has no history yet,
    # only events (sent while it was queued) ...
    first = {r["id"] for r in claimed if r["revision"] == 1}
    # ... and when the claim saw no event for it either, there is nothing to read at all.
    bare = {r["id"] for r in claimed if r["revision"] == 1 and r.get("has_events", True) is False}
    to_read = [r["id"] for r in claimed if r["id"] not in bare]
    state = await read(to_read, [run_id for run_id in to_read if run_id not in first]) if to_read else {}
    state.update({run_id: EMPTY_STATE for run_id in bare})
    return state


def executor_store(db: Database, namespace_id: str) -> ExecutorStore:
    """The store of ``db``'s database for namespace ``namespace_id`` (its implementation is the database's)."""
    return db.executor_store(namespace_id)
