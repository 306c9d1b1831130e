"""The worker protocol: register, claim (long-poll), heartbeat, record a task, transition a run."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import FromPath, JSONBody

from aiki.api.auth import policy
from aiki.api.deps import NamespaceId, Svc
from aiki.platform.services import children, executions
from aiki.worker_sdk import protocol as p


class WorkerController(Controller):
    path = "/api/v1/workers"
    tags = ["worker protocol"]

    @post(
        "/register",
        summary="Register a worker and the versions it serves",
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def register(
        self, data: JSONBody[p.RegisterWorkerRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.RegisterWorkerResponse:
        return await executions.register_worker(svc, namespace_id, data)

    @post("/claim", summary="Claim ready runs (long-poll)", status_code=200, opt=policy("worker:execute"))
    async def claim(self, data: JSONBody[p.ClaimRequest], svc: Svc, namespace_id: NamespaceId) -> p.ClaimResponse:
        return await executions.claim(svc, namespace_id, data)

    @post("/heartbeat", summary="Extend the leases of in-flight runs", status_code=200, opt=policy("worker:execute"))
    async def heartbeat(
        self, data: JSONBody[p.HeartbeatRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.HeartbeatResponse:
        return await executions.heartbeat(svc, namespace_id, data)


class ExecutionController(Controller):
    path = "/api/v1/runs/{run_id:str}"
    tags = ["worker protocol"]

    @post("/tasks", summary="Record a task attempt (fenced by revision)", status_code=200, opt=policy("worker:execute"))
    async def record_task(
        self, run_id: FromPath[str], data: JSONBody[p.RecordTaskRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.RecordTaskResponse:
        return await executions.record_task(svc, namespace_id, run_id, data)

    @post(
        "/transition",
        summary="Complete, fail or suspend a run (fenced by revision)",
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def transition(
        self, run_id: FromPath[str], data: JSONBody[p.TransitionRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.TransitionResponse:
        return await executions.transition(svc, namespace_id, run_id, data)

    @post(
        "/children",
        summary="Start a child run (memoized per entry, fenced by revision)",
        status_code=200,
        opt=policy("worker:execute"),
    )
    async def start_child(
        self, run_id: FromPath[str], data: JSONBody[p.StartChildRequest], svc: Svc, namespace_id: NamespaceId
    ) -> p.StartChildResponse:
        return await children.start_child(svc, namespace_id, run_id, data)
