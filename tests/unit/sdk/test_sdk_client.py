"""The client against ``httpx.MockTransport``: error mapping, local validation, long-polls."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

import aiki.worker_sdk as sdk
from aiki.worker_sdk import (
    AikiError,
    AuthenticationError,
    InvalidTransitionError,
    MalformedRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ReferenceConflictError,
    Run,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    ServerUnavailableError,
    StaleRevisionError,
    UnexpectedResponseError,
    UnexpectedStatusError,
    ValidationError,
    WaitTimeoutError,
    WorkflowNotFoundError,
    client,
    event,
    workflow,
)


@dataclass
class TrialInput:
    user_id: str


trial = workflow("subscription-trial")


@trial.v("1.0.0", events={"payment_received": event(), "seats": event(int)})
async def trial_v1(run: Run, input: TrialInput) -> dict[str, int]:
    return {}


def problem(status: int, code: str, **extra: Any) -> tuple[int, Any]:
    return status, {"type": "about:blank", "title": code, "status": status, "code": code, **extra}


def view(status: str = "queued", **extra: Any) -> dict[str, Any]:
    return {
        "id": "r1",
        "workflow": "subscription-trial",
        "version": "1.0.0",
        "status": status,
        "revision": 1,
        "attempt": 1,
        "created_at": 0,
        "updated_at": 0,
        "input": None,
        "output": None,
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (404, "workflow_not_found", WorkflowNotFoundError),
        (404, "run_not_found", RunNotFoundError),
        (404, "not_found", NotFoundError),
        (422, "validation_error", ValidationError),
        (400, "malformed_json", MalformedRequestError),
        (409, "reference_conflict", ReferenceConflictError),
        (409, "stale_revision", StaleRevisionError),
        (413, "payload_too_large", PayloadTooLargeError),
        (400, "invalid_transition", InvalidTransitionError),
        (401, "unauthorized", AuthenticationError),
        (403, "forbidden", PermissionDeniedError),
        (503, "database_unavailable", ServerUnavailableError),
        (418, "teapot", UnexpectedResponseError),
    ],
)
async def test_problem_codes_map_to_errors(fake: Any, fake_client: Any, status: int, code: str, error: type) -> None:
    fake.routes[("POST", "/runs")] = lambda _: problem(status, code, detail="because", run_id="r9")
    with pytest.raises(error) as info:
        await trial_v1.start(fake_client, TrialInput("u"))
    assert isinstance(info.value, AikiError)
    assert info.value.status == status
    if error is not UnexpectedResponseError and error is not ServerUnavailableError:
        assert info.value.code == code
        assert info.value.run_id == "r9"
    assert "because" in str(info.value)


async def test_validation_problem_carries_field(fake: Any, fake_client: Any) -> None:
    fake.routes[("POST", "/runs")] = lambda _: problem(422, "validation_error", field="user_id")
    with pytest.raises(ValidationError) as info:
        await trial_v1.start(fake_client, TrialInput("u"))
    assert info.value.field == "user_id"


async def test_rate_limit_and_non_json_errors(fake: Any, fake_client: Any) -> None:
    fake.routes[("GET", "/runs/r1")] = lambda _: (429, {"x": 1})
    with pytest.raises(RateLimitedError):
        await fake_client.get_run("r1")

    async def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway")

    c = client(transport=httpx.MockTransport(plain))
    with pytest.raises(ServerUnavailableError, match="bad gateway"):
        await c.get_run("r1")
    await c.close()


async def test_connection_error_is_server_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client(transport=httpx.MockTransport(refuse)) as c:
        with pytest.raises(ServerUnavailableError):
            await c.get_run("r1")


async def test_start_validates_before_any_request(fake: Any, fake_client: Any) -> None:
    with pytest.raises(ValidationError) as info:
        await trial_v1.start(fake_client, {"user_id": 42})  # type: ignore[arg-type]
    assert info.value.field == "user_id"
    assert fake.requests == []


async def test_start_sends_options_and_returns_handle(fake: Any, fake_client: Any) -> None:
    fake.routes[("POST", "/runs")] = lambda _: (201, {"run": view(), "created": True})
    starter = trial_v1.with_options(
        reference_id="order-42",
        conflict="return_existing",
        delay=timedelta(minutes=5),
        retry=sdk.RetryPolicy.fixed(2, timedelta(seconds=1)),
        pool="gpu",
    )
    handle = await starter.start(fake_client, TrialInput("u"))
    assert handle.id == "r1"
    _, path, body = fake.requests[0]
    assert path == "/runs"
    assert body == {
        "workflow": "subscription-trial",
        "version": "1.0.0",
        "input": {"user_id": "u"},
        "reference_id": "order-42",
        "conflict": "return_existing",
        "delay_ms": 300000,
        "retry": {"kind": "fixed", "max_attempts": 2, "base_ms": 1000, "factor": 1.0},
        "pool": "gpu",
    }


async def test_event_send_validates_and_posts(fake: Any, fake_client: Any) -> None:
    fake.routes[("POST", "/runs/r1/events/seats")] = lambda _: (200, {"event_id": "e1", "created": True})
    fake.routes[("GET", "/runs/r1")] = lambda _: (200, view())
    handle = await trial_v1.get_handle(fake_client, "r1")
    with pytest.raises(ValidationError):
        await handle.events.seats.send("many")
    sent = await handle.events.seats.send(3, reference_id="dedupe")
    assert sent.event_id == "e1"
    assert fake.requests[-1] == ("POST", "/runs/r1/events/seats", {"data": 3, "reference_id": "dedupe"})
    with pytest.raises(AttributeError):
        _ = handle.events.nope


async def test_get_handle_checks_the_version(fake: Any, fake_client: Any) -> None:
    fake.routes[("GET", "/runs/r1")] = lambda _: (200, view(workflow="other"))
    with pytest.raises(RunNotFoundError):
        await trial_v1.get_handle(fake_client, "r1")


async def test_get_handle_by_reference(fake: Any, fake_client: Any) -> None:
    fake.routes[("GET", "/runs")] = lambda req: (
        200,
        {"items": [view(reference_id="order-42")] if req.url.params["reference_id"] == "order-42" else []},
    )
    handle = await trial_v1.get_handle_by_reference(fake_client, "order-42")
    assert handle.id == "r1"
    with pytest.raises(RunNotFoundError):
        await trial_v1.get_handle_by_reference(fake_client, "missing")


async def test_wait_for_status_loops_until_reached(fake: Any, fake_client: Any) -> None:
    answers = iter([view("running"), view("running"), view("completed", output={"a": 1})])
    fake.routes[("GET", "/runs/r1")] = lambda req: (
        200,
        view() if "wait_for" not in req.url.params else next(answers),
    )
    handle = await trial_v1.get_handle(fake_client, "r1")
    reached = await handle.wait_for_status("completed")
    assert reached.status == "completed"
    polls = [p for m, p, _ in fake.requests if p == "/runs/r1"]
    assert len(polls) == 4


async def test_result_decodes_output_and_raises_on_failure(fake: Any, fake_client: Any) -> None:
    state = {"view": view("completed", output={"a": 1})}
    fake.routes[("GET", "/runs/r1")] = lambda _: (200, state["view"])
    handle = await trial_v1.get_handle(fake_client, "r1")
    assert await handle.result() == {"a": 1}
    state["view"] = view("failed", error={"type": "ValueError", "message": "x"})
    with pytest.raises(RunFailedError) as info:
        await handle.result()
    assert info.value.error is not None
    assert info.value.error.type == "ValueError"
    state["view"] = view("cancelled")
    with pytest.raises(RunCancelledError):
        await handle.result()
    state["view"] = view("completed")
    with pytest.raises(UnexpectedStatusError):
        await handle.wait_for_status("failed")


async def test_wait_for_status_times_out(fake: Any, fake_client: Any) -> None:
    fake.routes[("GET", "/runs/r1")] = lambda _: (200, view("running"))
    handle = await trial_v1.get_handle(fake_client, "r1")
    with pytest.raises(WaitTimeoutError) as info:
        await handle.wait_for_status("completed", timeout=timedelta(milliseconds=30))
    assert info.value.last_status == "running"
    assert info.value.code == "wait_timeout"


async def test_api_key_header_and_base_url() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=view())

    c = client(url="http://aiki.test", api_key="aiki_k", transport=httpx.MockTransport(record))
    await c.get_run("r1")
    await c.close()
    assert seen[0].headers["authorization"] == "Bearer aiki_k"
    assert str(seen[0].url) == "http://aiki.test/api/v1/runs/r1"


def test_client_needs_a_target() -> None:
    with pytest.raises(ValueError, match="url="):
        client()


def test_public_names_are_sorted_and_importable() -> None:
    assert sdk.__all__ == sorted(sdk.__all__)
    for name in sdk.__all__:
        assert hasattr(sdk, name)


def test_error_codes_are_unique() -> None:
    classes = [getattr(sdk, n) for n in sdk.__all__ if isinstance(getattr(sdk, n), type)]
    errors = [c for c in classes if issubclass(c, AikiError)]
    codes = [c.code for c in errors]
    assert len(codes) == len(set(codes))
