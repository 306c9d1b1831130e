"""Bad input is refused with a clear problem and creates nothing (SPEC §2 typed payloads, §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from aiki import Run, ValidationError, client, workflow

from .helpers import API, WAIT, CountingASGI, close_client, count_runs, new_key

WORKFLOW = "bad-input-signup"
MAX_PAYLOAD = 64 * 1024  # the fixture server's limit


@dataclass
class SignupInput:
    user_id: str


signup_wf = workflow(name=WORKFLOW)


@signup_wf.v("1.0.0")
async def signup_v1(run: Run, input: SignupInput) -> str:
    return input.user_id


def _start_body(input: Any, *, workflow: str = WORKFLOW, version: str = "1.0.0") -> dict[str, Any]:
    return {"workflow": workflow, "version": version, "input": input}


async def _one_good_run(aiki: Any) -> int:
    """Register the version, start one valid run through the API, and return the run count."""
    await aiki.worker([signup_v1])
    resp = await aiki.http.post(f"{API}/runs", json=_start_body({"user_id": new_key("user")}))
    assert resp.status_code == 201, resp.text
    assert resp.json()["created"] is True
    count = await count_runs(aiki.http)
    assert count == 1
    return count


def _assert_problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


async def test_unknown_workflow_or_version_is_404_naming_the_workflow_when_registration_is_required(
    aiki: Any,
) -> None:
    runs = await _one_good_run(aiki)
    strict = {"require_registered": True}

    resp = await aiki.http.post(f"{API}/runs", json=_start_body({}, workflow="bad-input-no-such-workflow") | strict)
    body = _assert_problem(resp, 404, "workflow_not_found")
    assert "bad-input-no-such-workflow" in body["detail"]

    resp = await aiki.http.post(f"{API}/runs", json=_start_body({"user_id": "u1"}, version="9.9.9") | strict)
    body = _assert_problem(resp, 404, "workflow_not_found")
    assert WORKFLOW in body["detail"]

    assert await count_runs(aiki.http) == runs


@pytest.mark.parametrize("bad_input", [{"user_id": 5}, {}], ids=["wrong-type", "missing-field"])
async def test_input_not_fitting_the_type_is_422_naming_the_field(aiki: Any, bad_input: Any) -> None:
    runs = await _one_good_run(aiki)

    resp = await aiki.http.post(f"{API}/runs", json=_start_body(bad_input))
    body = _assert_problem(resp, 422, "validation_error")
    assert "user_id" in f"{body.get('field')} {body.get('detail')}"

    assert await count_runs(aiki.http) == runs


async def test_malformed_json_is_400(aiki: Any) -> None:
    runs = await _one_good_run(aiki)

    resp = await aiki.http.post(
        f"{API}/runs",
        content=b'{"workflow": "bad-input-signup", "version": ',
        headers={"content-type": "application/json"},
    )
    _assert_problem(resp, 400, "malformed_json")

    assert await count_runs(aiki.http) == runs


async def test_oversized_payload_is_413(aiki: Any) -> None:
    runs = await _one_good_run(aiki)

    resp = await aiki.http.post(f"{API}/runs", json=_start_body({"user_id": "x" * (MAX_PAYLOAD + 1024)}))
    assert resp.status_code == 413, resp.text[:500]

    assert await count_runs(aiki.http) == runs


@pytest.mark.parametrize(
    "bad_input",
    [SignupInput(user_id=5), {"user_id": 5}, {}],  # type: ignore[arg-type]
    ids=["dataclass-wrong-type", "dict-wrong-type", "missing-field"],
)
async def test_sdk_refuses_bad_input_before_any_request(aiki: Any, bad_input: Any) -> None:
    runs = await _one_good_run(aiki)
    counting = CountingASGI(aiki.handler)
    sdk = client(handler=counting)
    try:
        with pytest.raises(ValidationError) as excinfo:
            await signup_v1.start(sdk, bad_input)
    finally:
        await close_client(sdk)

    assert excinfo.value.field == "user_id"
    assert counting.requests == []
    assert await count_runs(aiki.http) == runs


async def test_dataclass_input_round_trips_after_a_rejected_start(aiki: Any) -> None:
    """A rejected start leaves the version usable, and a dataclass input reaches the workflow typed."""
    await _one_good_run(aiki)
    await aiki.http.post(f"{API}/runs", json=_start_body({"user_id": 5}))
    handle = await signup_v1.start(aiki.client, SignupInput(user_id="u-ok"))
    await handle.wait_for_status("completed", timeout=WAIT)
    assert await handle.result() == "u-ok"
