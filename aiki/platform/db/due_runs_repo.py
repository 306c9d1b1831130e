"""SQL for the timer loop: due deadlines across every namespace, and the stall sweep."""

from __future__ import annotations

from typing import Any

from aiki.platform.db.raw import RawConn, Repository, Row
from aiki.platform.db.run_rows import RUN_COLUMNS
from aiki.platform.db.statuses import QUEUED, RUNNING, STALLED

# The queued runs the stall sweep picks: $1 queued before, $3 at most.
STALL_PICK = f"SELECT id FROM runs WHERE status = {QUEUED} AND queued_at < $1 ORDER BY queued_at LIMIT $3"
# Their new status ($2 now).
STALL_SET = f"SET status = {STALLED}, queued_at = NULL, updated_at = $2"


class DueRunRepository(Repository):
    """The timer loop's view: due deadlines across every namespace.

    Deliberately unscoped: it belongs to the server runtime, which serves all tenants, and it only
    hands each run to a namespace-scoped ``RunRepository`` to act on. ``DueRunRepository(conn)`` is
    the subclass of ``conn``'s database.
    """

    def __init__(self, conn: RawConn) -> None:
        self.conn = conn

    async def end_due_sleeps(self, now: int, limit: int, target: str) -> list[Row]:
        """Move up to ``limit`` runs whose sleep is over to ``target`` where one statement can,
        autocommitted (status, sleep entry and history change together; rows another replica holds
        are skipped). Returns the runs moved (``id``, ``namespace_id``); none where the database
        has no such statement (the general pass of the timer loop ends them)."""
        raise NotImplementedError

    def _lease_expiry(self, args: list[Any], lease_ttl_ms: int) -> str:
        """The condition under which a running run's lease may expire ($1 now, $3 leases from);
        appends what it binds to ``args``."""
        raise NotImplementedError

    async def take_due(self, now: int, limit: int, *, leases_from: int = 0, lease_ttl_ms: int = 0) -> list[Row]:
        """Runs whose ``wake_at`` passed (locked; skipped if another replica holds them).

        A running run's ``wake_at`` is its lease's expiry. Leases expire only from ``leases_from``
        on and, on PostgreSQL, once the database server has been up for ``lease_ttl_ms``: a worker
        cannot heartbeat while the database is down, so its lease is not held against it.
        """
        args: list[Any] = [now, limit, leases_from]
        leases = self._lease_expiry(args, lease_ttl_ms)
        return await self.conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE wake_at IS NOT NULL AND wake_at <= $1 "
            f"AND (status <> {RUNNING} OR ({leases})) ORDER BY wake_at LIMIT $2{self.conn.skip_locked}",
            *args,
        )

    async def take_expired(self, now: int, limit: int) -> list[Row]:
        """Runs whose execution deadline passed (locked; skipped if another replica holds them)."""
        return await self.conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE deadline_at IS NOT NULL AND deadline_at <= $1 "
            f"ORDER BY deadline_at LIMIT $2{self.conn.skip_locked}",
            now,
            limit,
        )

    def _lease_hold(self, args: list[Any], lease_ttl_ms: int) -> str:
        """When the earliest lease expiry is acted on (``min(wake_at)``, $1 leases from); appends
        what it binds to ``args``."""
        raise NotImplementedError

    async def next_wake_at(self, *, leases_from: int = 0, lease_ttl_ms: int = 0) -> int | None:
        """The earliest deadline; a lease expiry counts from when :meth:`take_due` would act on it."""
        args: list[Any] = [leases_from]
        hold = self._lease_hold(args, lease_ttl_ms)
        value = await self.conn.fetchval(
            "SELECT min(t) FROM ("
            f"SELECT min(wake_at) AS t FROM runs WHERE wake_at IS NOT NULL AND status <> {RUNNING} "
            f"UNION ALL SELECT CASE WHEN min(wake_at) IS NULL THEN NULL ELSE {hold} END AS t "
            f"FROM runs WHERE wake_at IS NOT NULL AND status = {RUNNING} "
            "UNION ALL SELECT min(deadline_at) AS t FROM runs WHERE deadline_at IS NOT NULL) AS deadlines",
            *args,
        )
        return int(value) if value is not None else None

    async def stall(self, queued_before: int, now: int, limit: int) -> list[Row]:
        """Move runs queued since before ``queued_before`` to ``stalled``; return them
        (``id, namespace_id, attempt``).

        The conditional update (and skipping locked rows where rows are locked) lets replicas sweep
        concurrently: a run is stalled once, and never one a worker is claiming at that moment.
        """
        raise NotImplementedError
