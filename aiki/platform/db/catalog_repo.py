"""SQL for the workflow catalogue (workflows and their versions) and connected workers."""

from __future__ import annotations

import importlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aiki.platform.db.raw import RawConn
from aiki.platform.db.tables import runs, workers, workflow_versions, workflows

Row = sa.RowMapping


class CatalogRepository:
    """Workflows, versions and workers of one namespace."""

    def __init__(self, conn: AsyncConnection, namespace_id: str, *, dialect: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id
        # The dialect's own INSERT (it has ON CONFLICT): sqlalchemy.dialects.<name>.insert.
        self._insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert

    async def get_version(self, workflow: str, version: str) -> Row | None:
        stmt = sa.select(
            workflow_versions.c.input_schema, workflow_versions.c.event_schemas, workflow_versions.c.timeout_ms
        ).where(
            workflow_versions.c.namespace_id == self.namespace_id,
            workflow_versions.c.workflow_name == workflow,
            workflow_versions.c.version == version,
        )
        return (await self.conn.execute(stmt)).mappings().first()

    async def time_limit_unstarted_runs(self, workflow: str, version: str, timeout_ms: int) -> None:
        """Give the version's execution time limit to its runs that never started and have none.

        Those are runs started before any worker registered the version (a start copies the
        limit from the catalogue, which had none for it yet); their first claim turns the limit
        into a deadline as for any run.
        """
        await self.conn.execute(
            sa.update(runs)
            .where(
                runs.c.namespace_id == self.namespace_id,
                runs.c.workflow_name == workflow,
                runs.c.version == version,
                runs.c.timeout_ms.is_(None),
                runs.c.started_at.is_(None),
            )
            .values(timeout_ms=timeout_ms)
        )

    async def upsert_version(
        self,
        workflow_id: str,
        version_id: str,
        workflow: str,
        version: str,
        input_schema: str | None,
        event_schemas: str | None,
        now: int,
        timeout_ms: int | None = None,
    ) -> None:
        await self.conn.execute(
            self._insert(workflows)
            .values(id=workflow_id, namespace_id=self.namespace_id, name=workflow, created_at=now)
            .on_conflict_do_nothing(index_elements=[workflows.c.namespace_id, workflows.c.name])
        )
        wf_id = (
            await self.conn.execute(
                sa.select(workflows.c.id).where(
                    workflows.c.namespace_id == self.namespace_id, workflows.c.name == workflow
                )
            )
        ).scalar_one()
        stmt = self._insert(workflow_versions).values(
            id=version_id,
            namespace_id=self.namespace_id,
            workflow_id=wf_id,
            workflow_name=workflow,
            version=version,
            input_schema=input_schema,
            event_schemas=event_schemas,
            timeout_ms=timeout_ms,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[
                workflow_versions.c.namespace_id,
                workflow_versions.c.workflow_name,
                workflow_versions.c.version,
            ],
            set_={
                "input_schema": stmt.excluded.input_schema,
                "event_schemas": stmt.excluded.event_schemas,
                "timeout_ms": stmt.excluded.timeout_ms,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        await self.conn.execute(stmt)

    async def list_versions(self) -> list[Row]:
        stmt = (
            sa.select(workflow_versions.c.workflow_name, workflow_versions.c.version, workflow_versions.c.created_at)
            .where(workflow_versions.c.namespace_id == self.namespace_id)
            .order_by(workflow_versions.c.workflow_name, workflow_versions.c.version)
        )
        return list((await self.conn.execute(stmt)).mappings().all())

    async def upsert_worker(self, values: dict[str, Any]) -> None:
        stmt = self._insert(workers).values(namespace_id=self.namespace_id, **values)
        stmt = stmt.on_conflict_do_update(
            # Ids are the namespace's own: the same id in another namespace is another worker.
            index_elements=[workers.c.namespace_id, workers.c.id],
            set_={
                "host": stmt.excluded.host,
                "versions": stmt.excluded.versions,
                "pools": stmt.excluded.pools,
                "concurrency": stmt.excluded.concurrency,
                # The same id registering again is a restarted worker (a stable worker_id).
                "pid": stmt.excluded.pid,
                "started_at": stmt.excluded.started_at,
                "last_heartbeat_at": stmt.excluded.last_heartbeat_at,
            },
        )
        await self.conn.execute(stmt)


class WorkerHeartbeats:
    """The one worker write on the hot path, as driver-level SQL (see ``raw.py``)."""

    def __init__(self, conn: RawConn, namespace_id: str) -> None:
        self.conn = conn
        self.namespace_id = namespace_id

    async def seen(self, worker_id: str, now: int) -> None:
        await self.conn.execute(
            "UPDATE workers SET last_heartbeat_at = $3 WHERE id = $1 AND namespace_id = $2",
            worker_id,
            self.namespace_id,
            now,
        )
