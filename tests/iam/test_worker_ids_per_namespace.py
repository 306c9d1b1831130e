"""Worker ids belong to their namespace, on both databases: a tenant that registers another
tenant's worker id gets a worker of its own, and neither sees, shadows nor disturbs the other's."""

from __future__ import annotations

from typing import Any

import httpx

from tests.iam_support import API, IamHarness

WORKER_ID = "worker-1"


def _register(version: str, host: str) -> dict[str, Any]:
    return {
        "worker_id": WORKER_ID,
        "host": host,
        "versions": [{"workflow": f"wf-{version}", "version": "1.0.0"}],
        "concurrency": 4,
        "pid": 42,
    }


async def _workers(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    listed = await admin.get(f"{API}/workers")
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def _claim(http: httpx.AsyncClient, workflow: str) -> list[dict[str, Any]]:
    claimed = await http.post(
        f"{API}/workers/claim",
        json={"worker_id": WORKER_ID, "versions": [[workflow, "1.0.0"]], "max_runs": 5, "wait_ms": 0},
    )
    assert claimed.status_code == 200, claimed.text
    activations: list[dict[str, Any]] = claimed.json()["activations"]
    return activations


async def test_a_taken_worker_id_in_another_namespace_is_another_worker(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@a.example", organization="A")
    bob = await iam_aiki.signup("bob@b.example", organization="B")
    worker_a = iam_aiki.key_http((await iam_aiki.create_key(alice, "worker"))["key"])
    worker_b = iam_aiki.key_http((await iam_aiki.create_key(bob, "worker"))["key"])
    admin_a = iam_aiki.key_http((await iam_aiki.create_key(alice, "admin"))["key"])
    admin_b = iam_aiki.key_http((await iam_aiki.create_key(bob, "admin"))["key"])

    # B learned A's worker id and registers it first, to hide A's worker.
    registered_b = await worker_b.post(f"{API}/workers/register", json=_register("b", "host-b"))
    assert registered_b.status_code == 200, registered_b.text
    registered_a = await worker_a.post(f"{API}/workers/register", json=_register("a", "host-a"))
    assert registered_a.status_code == 200, registered_a.text
    assert registered_a.json()["worker_id"] == registered_b.json()["worker_id"] == WORKER_ID

    # Each namespace lists its own worker under that id, never the other's.
    [listed_a] = await _workers(admin_a)
    [listed_b] = await _workers(admin_b)
    assert (listed_a["id"], listed_a["host"], listed_a["versions"]) == (
        WORKER_ID,
        "host-a",
        [{"workflow": "wf-a", "version": "1.0.0"}],
    )
    assert (listed_b["id"], listed_b["host"], listed_b["versions"]) == (
        WORKER_ID,
        "host-b",
        [{"workflow": "wf-b", "version": "1.0.0"}],
    )

    # A's worker keeps working: it claims A's run and heartbeats it; B's claims with the same id get nothing of A's.
    started = await admin_a.post(f"{API}/runs", json={"workflow": "wf-a", "version": "1.0.0", "input": {}})
    assert started.status_code == 201, started.text
    run_id = started.json()["run"]["id"]
    assert await _claim(worker_b, "wf-a") == []
    [activation] = await _claim(worker_a, "wf-a")
    assert activation["run_id"] == run_id
    beat = await worker_a.post(
        f"{API}/workers/heartbeat", json={"worker_id": WORKER_ID, "runs": [[run_id, activation["revision"]]]}
    )
    assert beat.status_code == 200, beat.text
    assert beat.json()["stale"] == []
    [listed_a] = await _workers(admin_a)
    [listed_b] = await _workers(admin_b)
    assert (listed_a["in_flight"], listed_b["in_flight"]) == (1, 0)

    # B registering again (a restart) changes B's worker only.
    again = await worker_b.post(f"{API}/workers/register", json=_register("b", "host-b2"))
    assert again.status_code == 200, again.text
    assert [w["host"] for w in await _workers(admin_a)] == ["host-a"]
    assert [w["host"] for w in await _workers(admin_b)] == ["host-b2"]
