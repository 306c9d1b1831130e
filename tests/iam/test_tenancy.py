"""Tenancy end to end: two organizations serve the same workflow name and version, each with its own
worker holding a `worker` key of its namespace, both running. Each executes its own runs only."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from aiki import Run, client, task, worker, workflow
from tests.iam_support import API, IamHarness
from tests.integration.helpers import LEDGER, WAIT, new_key

NAME, VERSION = "tenancy-wf", "1.0.0"


@task(name="tenancy-mark-a")
async def mark_a(key: str) -> str:
    LEDGER.hit("tenancy-executed-by-a", key)
    return "a"


@task(name="tenancy-mark-b")
async def mark_b(key: str) -> str:
    LEDGER.hit("tenancy-executed-by-b", key)
    return "b"


# Two codebases that happen to use the same workflow name and version.
wf_of_a = workflow(name=NAME)
wf_of_b = workflow(name=NAME)


@wf_of_a.v(VERSION)
async def version_of_a(run: Run, key: str) -> str:
    return await mark_a.start(run, key)


@wf_of_b.v(VERSION)
async def version_of_b(run: Run, key: str) -> str:
    return await mark_b.start(run, key)


async def test_a_worker_key_executes_its_namespace_runs_only(iam_aiki: IamHarness) -> None:
    alice = await iam_aiki.signup("alice@a.example", organization="A")
    bob = await iam_aiki.signup("bob@b.example", organization="B")
    key_a = (await iam_aiki.create_key(alice, "worker"))["key"]
    key_b = (await iam_aiki.create_key(bob, "worker"))["key"]
    client_a = client(handler=iam_aiki.handler, api_key=key_a)
    client_b = client(handler=iam_aiki.handler, api_key=key_b)
    handles = []
    try:
        handles.append(await worker(workflows=[version_of_a], concurrency=5).spawn(client_a))
        handles.append(await worker(workflows=[version_of_b], concurrency=5).spawn(client_b))
        keys_a = [new_key("a") for _ in range(5)]
        keys_b = [new_key("b") for _ in range(5)]
        runs_a = [await version_of_a.start(client_a, k) for k in keys_a]
        runs_b = [await version_of_b.start(client_b, k) for k in keys_b]
        for handle in runs_a + runs_b:
            await handle.wait_for_status("completed", timeout=WAIT)
        assert [await h.result() for h in runs_a] == ["a"] * 5
        assert [await h.result() for h in runs_b] == ["b"] * 5
        for k in keys_a:
            assert LEDGER.count("tenancy-executed-by-a", k) == 1
            assert LEDGER.count("tenancy-executed-by-b", k) == 0
        for k in keys_b:
            assert LEDGER.count("tenancy-executed-by-b", k) == 1
            assert LEDGER.count("tenancy-executed-by-a", k) == 0

        # Each namespace's listing holds its own runs only; A's ids are 404 to B.
        listed_a = (await iam_aiki.key_http(key_a).get(f"{API}/runs")).json()["items"]
        assert {r["id"] for r in listed_a} == {h.id for h in runs_a}
        for handle in runs_a:
            resp = await iam_aiki.key_http(key_b).get(f"{API}/runs/{handle.id}")
            assert resp.status_code == 404
    finally:
        for handle in handles:
            with contextlib.suppress(Exception):
                await handle.stop(grace=timedelta(seconds=1))
        await asyncio.gather(client_a.close(), client_b.close())
