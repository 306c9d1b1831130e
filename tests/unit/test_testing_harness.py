"""``aiki.testing``: the harness users test their workflows with (embedded server, private database).

Every test here uses the harness as a user would: through ``aiki.testing`` and the public SDK only.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import gc
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import aiki.testing
from aiki import (
    ChildResult,
    RetryPolicy,
    Run,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    SleepResult,
    UnexpectedStatusError,
    WaitTimeoutError,
    event,
    task,
    workflow,
)
from aiki.testing import SentEvent, TaskCall, WorkflowEnvironment, _database, _environment

# A guard for waits on things the test itself sets off; none is expected to come near it.
GUARD_S = 20


# -- workflows under test --------------------------------------------------------------------


@dataclass
class Order:
    id: str
    amount: int


@task(name="th-reserve")
async def reserve(order: Order) -> str:
    return f"res-{order.id}"


@task(name="th-charge")
async def charge(amount: int) -> int:
    return amount


checkout = workflow(name="th-checkout")


@checkout.v("1", events={"payment": event(int)})
async def checkout_v1(run: Run, order: Order) -> dict[str, Any]:
    reservation = await reserve.start(run, order)
    paid = await run.events.payment.wait(timeout=timedelta(days=7))
    if paid.timeout:
        return {"reservation": reservation, "charged": None}
    settled = await run.sleep(timedelta(hours=1), name="settle")
    charged = await charge.start(run, paid.data)
    return {"reservation": reservation, "charged": charged, "settle_skipped": settled.cancelled}


naps = workflow(name="th-naps")


@naps.v("1")
async def naps_v1(run: Run, count: int) -> list[bool]:
    results: list[SleepResult] = []
    for i in range(count):
        results.append(await run.sleep(timedelta(days=1 + i), name=f"nap-{i}"))
    return [r.cancelled for r in results]


short_naps = workflow(name="th-short-naps")


@short_naps.v("1")
async def short_naps_v1(run: Run, count: int) -> list[bool]:
    # 20 s: below the hold limit of the test that uses it, so its executor holds each sleep.
    return [(await run.sleep(timedelta(seconds=20), name=f"short-{i}")).cancelled for i in range(count)]


child_wf = workflow(name="th-child")


@child_wf.v("1", events={"go": event(str)})
async def child_v1(run: Run, prefix: str) -> str:
    got = await run.events.go.wait()
    return f"{prefix}:{got.data}"


parent_wf = workflow(name="th-parent")


@parent_wf.v("1")
async def parent_v1(run: Run, prefix: str) -> str:
    child = await child_v1.start_as_child(run, prefix)
    result: ChildResult[str] = await child.wait_for_status("completed")
    return f"parent got {result.output}"


FLAKY_FAILURES: dict[str, int] = {}


@task(name="th-flaky", retry=RetryPolicy.fixed(4, timedelta(0)))
async def flaky(key: str) -> str:
    left = FLAKY_FAILURES.get(key, 0)
    if left:
        FLAKY_FAILURES[key] = left - 1
        raise ConnectionError(f"flaky {key}, {left} failure(s) to go")
    return f"ok {key}"


retrying = workflow(name="th-retrying")


@retrying.v("1")
async def retrying_v1(run: Run, key: str) -> str:
    return await flaky.start(run, key)


doomed = workflow(name="th-doomed")


@doomed.v("1", retry=RetryPolicy.fixed(2, timedelta(0)))
async def doomed_v1(run: Run, why: str) -> None:
    raise ValueError(why)


ENTERED: dict[str, asyncio.Event] = {}
CANCELLED: dict[str, asyncio.Event] = {}


@task(name="th-blocking")
async def blocking(key: str) -> None:
    ENTERED[key].set()
    try:
        await asyncio.Event().wait()  # until cancelled
    except asyncio.CancelledError:
        CANCELLED[key].set()
        raise


blocker = workflow(name="th-blocker")


@blocker.v("1")
async def blocker_v1(run: Run, key: str) -> None:
    await blocking.start(run, key)


# -- the pytest form users copy --------------------------------------------------------------


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with WorkflowEnvironment(
        workflows=[checkout_v1, naps_v1, child_v1, parent_v1, retrying_v1, doomed_v1, blocker_v1]
    ) as env:
        yield env


# -- a workflow with tasks, an event and a skipped sleep -------------------------------------


async def test_tasks_event_and_skipped_sleep(env: WorkflowEnvironment) -> None:
    run = await env.start(checkout_v1, Order(id="o-1", amount=30))

    waiting = await env.wait_until_waiting(run)
    assert waiting.status == "awaiting_event"
    assert await env.tasks(run) == [
        TaskCall(name="th-reserve", status="completed", attempts=1, input={"id": "o-1", "amount": 30},
                 output="res-o-1", error=None, seq=0),
    ]  # fmt: skip

    await run.events.payment.send(30)
    await env.skip_sleep(run)
    assert await run.result() == {"reservation": "res-o-1", "charged": 30, "settle_skipped": True}

    assert [(t.name, t.output) for t in await env.tasks(run)] == [("th-reserve", "res-o-1"), ("th-charge", 30)]
    statuses = await env.statuses(run)
    assert statuses[0] == "queued"
    assert statuses[-1] == "completed"
    assert "awaiting_event" in statuses
    assert "sleeping" in statuses
    detail = await env.detail(run)
    assert [(s.name, s.status) for s in detail.sleeps] == [("settle", "cancelled")]
    assert await env.events(run) == [SentEvent(name="payment", data=30, reference_id=None, seq=0)]
    assert [h.to_status for h in await env.history(run)] == statuses


async def test_skip_sleeps_ends_every_sleep_until_the_run_ends(env: WorkflowEnvironment) -> None:
    run = await env.start(naps_v1, 3)
    view = await env.skip_sleeps(run)
    assert view.status == "completed"
    assert await run.result() == [True, True, True]
    assert (await env.statuses(run)).count("sleeping") == 3


async def test_a_sleep_held_by_its_executor_is_skipped_too() -> None:
    """With ``sleep_hold_max``, a short sleep is waited out in memory (production's default): the
    run is ``sleeping`` all the same, and waking it ends the sleep at once."""
    async with WorkflowEnvironment(workflows=[naps_v1], sleep_hold_max=timedelta(seconds=30)) as env:
        run = await env.start(naps_v1, 1)  # one nap of a day: longer than the hold limit, suspends
        await env.skip_sleep(run)
        assert await run.result() == [True]

        held = await short_naps_v1.start(env.client, 2)
        await env.start_worker([short_naps_v1])
        assert (await env.skip_sleeps(held)).status == "completed"
        assert await held.result() == [True, True]
        assert [s.status for s in (await env.detail(held)).sleeps] == ["cancelled", "cancelled"]
        reasons = [h.reason or "" for h in await env.history(held)]
        assert sum("held by its executor" in r for r in reasons) == 2  # the sleeps were held indeed
        assert reasons.count("skipped by aiki.testing") == 2


async def test_skip_sleeps_stops_at_a_wait_for_something_else(env: WorkflowEnvironment) -> None:
    run = await env.start(checkout_v1, Order(id="o-2", amount=5))
    view = await env.skip_sleeps(run)
    assert view.status == "awaiting_event"  # there was no sleep before the event


async def test_skip_sleep_of_a_run_that_never_sleeps_says_so(env: WorkflowEnvironment) -> None:
    run = await env.start(naps_v1, 0)
    with pytest.raises(UnexpectedStatusError) as caught:
        await env.skip_sleep(run)
    assert caught.value.actual == "completed"


async def test_a_wait_gives_up_at_its_timeout(env: WorkflowEnvironment) -> None:
    run = await env.start(checkout_v1, Order(id="o-3", amount=1))
    await env.wait_until_waiting(run)
    with pytest.raises(WaitTimeoutError):
        await env.wait_for_status(run, "completed", timeout=0)


# -- children --------------------------------------------------------------------------------


async def test_a_child_run_is_listed_and_driven(env: WorkflowEnvironment) -> None:
    parent = await env.start(parent_v1, "p")
    waiting = await env.wait_until_waiting(parent)
    assert waiting.status == "awaiting_child"

    (child,) = await env.children(parent)
    assert (child.workflow, child.version) == ("th-child", "1")
    child_run = await child_v1.get_handle(env.client, child.id)
    await env.wait_until_waiting(child_run)
    await child_run.events.go.send("hi")

    assert await parent.result() == "parent got p:hi"
    assert await child_run.result() == "p:hi"
    assert (await env.detail(child.id)).run.parent_run_id == parent.id


# -- failures and retries --------------------------------------------------------------------


async def test_a_task_retried_until_it_succeeds(env: WorkflowEnvironment) -> None:
    FLAKY_FAILURES["k1"] = 2
    run = await env.start(retrying_v1, "k1")
    assert await run.result() == "ok k1"
    (call,) = await env.tasks(run)
    assert (call.name, call.status, call.attempts, call.output) == ("th-flaky", "completed", 3, "ok k1")
    assert (await env.statuses(run)).count("awaiting_retry") == 2


async def test_a_task_that_exhausts_its_retries_fails_the_run(env: WorkflowEnvironment) -> None:
    FLAKY_FAILURES["k2"] = 10
    run = await env.start(retrying_v1, "k2")
    with pytest.raises(RunFailedError) as caught:
        await run.result()
    assert caught.value.error is not None
    assert "th-flaky" in caught.value.error.message
    (call,) = await env.tasks(run)
    assert (call.status, call.attempts) == ("failed", 4)
    assert call.error is not None
    assert call.error.type == "ConnectionError"


async def test_a_failing_workflow_is_retried_then_fails(env: WorkflowEnvironment) -> None:
    run = await env.start(doomed_v1, "no stock")
    with pytest.raises(RunFailedError) as caught:
        await run.result()
    assert caught.value.error is not None
    assert (caught.value.error.type, caught.value.error.message) == ("ValueError", "no stock")
    view = await run.describe()
    assert view.attempt == 2
    assert [e.attempt for e in await env.history(run)][-1] == 2
    assert "awaiting_retry" in await env.statuses(run)


# -- cancellation ----------------------------------------------------------------------------


async def test_cancel_a_waiting_run(env: WorkflowEnvironment) -> None:
    run = await env.start(checkout_v1, Order(id="o-4", amount=2))
    await env.wait_until_waiting(run)
    await run.cancel("customer left")
    with pytest.raises(RunCancelledError):
        await run.result()
    assert (await env.statuses(run))[-1] == "cancelled"
    with pytest.raises(RunCancelledError):
        await env.wait_until_waiting(run)


async def test_cancel_a_running_task(env: WorkflowEnvironment) -> None:
    ENTERED["c1"], CANCELLED["c1"] = asyncio.Event(), asyncio.Event()
    run = await env.start(blocker_v1, "c1")
    await asyncio.wait_for(ENTERED["c1"].wait(), GUARD_S)
    await run.cancel()
    await asyncio.wait_for(CANCELLED["c1"].wait(), GUARD_S)  # the worker stopped the task
    assert (await env.wait_for_status(run, "cancelled")).status == "cancelled"


# -- environments are separate, closed completely, and report misuse -------------------------


async def test_two_environments_do_not_interfere() -> None:
    async with (
        WorkflowEnvironment(workflows=[checkout_v1]) as one,
        WorkflowEnvironment(workflows=[checkout_v1]) as two,
    ):
        in_one = await one.start(checkout_v1.with_options(reference_id="same"), Order(id="a", amount=1))
        in_two = await two.start(checkout_v1.with_options(reference_id="same"), Order(id="b", amount=2))
        assert in_one.id != in_two.id
        await one.wait_until_waiting(in_one)
        await two.wait_until_waiting(in_two)
        with pytest.raises(RunNotFoundError):
            await two.client.get_run(in_one.id)
        assert [r.id for r in (await one.client.list_runs()).items] == [in_one.id]
        assert [r.id for r in (await two.client.list_runs()).items] == [in_two.id]
        assert [w.id for w in (await one.client.list_workers()).items] == [one.worker.worker_id]

        await in_two.cancel()
        await in_one.events.payment.send(1)
        await one.skip_sleep(in_one)
        assert (await in_one.result())["charged"] == 1
        with pytest.raises(RunCancelledError):
            await in_two.result()


@pytest.fixture
def unraisable() -> Iterator[list[Any]]:
    """What ``__del__`` methods reported meanwhile (an unclosed connection warns there, unseen)."""
    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


async def test_leaving_the_environment_leaves_nothing_behind(unraisable: list[Any]) -> None:
    async with WorkflowEnvironment():
        pass  # the process's template is made, and kept, outside what is counted below
    before = asyncio.all_tasks()
    threads = set(threading.enumerate())
    ENTERED["c2"], CANCELLED["c2"] = asyncio.Event(), asyncio.Event()
    async with WorkflowEnvironment(workflows=[blocker_v1, naps_v1]) as env:
        sleeper = await env.start(naps_v1, 1)
        await env.wait_until_waiting(sleeper)
        await env.start(blocker_v1, "c2")
        await asyncio.wait_for(ENTERED["c2"].wait(), GUARD_S)
    # The execution under way was cancelled, not abandoned.
    assert CANCELLED["c2"].is_set()
    # Cancelled helpers of the worker finish within a turn of the loop; nothing waits on a clock.
    for _ in range(5):
        await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
    # aiosqlite's connection threads end once their connection is closed.
    for thread in set(threading.enumerate()) - threads:
        thread.join(GUARD_S)
    assert set(threading.enumerate()) - threads == set()
    gc.collect()
    assert [(u.exc_type, str(u.exc_value)) for u in unraisable] == []


async def test_misuse_is_reported() -> None:
    env = WorkflowEnvironment(workflows=[naps_v1])
    with pytest.raises(RuntimeError, match="not open"):
        _ = env.client
    with pytest.raises(RuntimeError, match="not open"):
        _ = env.server
    async with env:
        with pytest.raises(RuntimeError, match="open already"):
            await env.open()
        assert env.server.handler is not None
    await env.close()  # idempotent
    with pytest.raises(RuntimeError, match="no worker"):
        _ = env.worker
    async with WorkflowEnvironment() as bare:
        with pytest.raises(RuntimeError, match="no worker"):
            _ = bare.worker


async def test_an_environment_that_cannot_open_leaves_nothing_open() -> None:
    env = WorkflowEnvironment(workflows=[naps_v1], database_url="mysql://nowhere/aiki")
    with pytest.raises(ValueError, match="not supported"):
        await env.open()
    with pytest.raises(RuntimeError, match="not open"):
        _ = env.client
    await env.close()


async def test_an_environment_without_workflows_runs_workers_it_is_given() -> None:
    async with WorkflowEnvironment(wait_timeout=timedelta(seconds=GUARD_S)) as env:
        run = await env.start(naps_v1.with_options(pool="slow"), 1)
        handle = await env.start_worker([naps_v1], pools=["slow"])
        await env.skip_sleep(run)
        assert await run.result() == [True]
        assert handle.worker_id in [w.id for w in (await env.client.list_workers()).items]


async def test_each_environment_starts_on_an_empty_database() -> None:
    for _ in range(2):
        async with WorkflowEnvironment(workflows=[naps_v1]) as env:
            assert (await env.client.list_runs()).items == []
            run = await env.start(naps_v1, 0)
            assert await run.result() == []


async def test_without_memdb_a_temporary_file_stands_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_database, "memdb_supported", lambda: False)
    monkeypatch.setattr(_database, "_template", None)
    async with WorkflowEnvironment(workflows=[naps_v1]) as env:
        template = _database.template()
        assert template is not None
        url = env.server.db.url
        assert "vfs=memdb" not in url
        path = _file_of(url)
        assert path.exists()
        run = await env.start(naps_v1, 1)
        await env.skip_sleep(run)
        assert await run.result() == [True]
    assert not path.parent.exists()
    template_file = _file_of(template.url)
    assert template_file.exists()
    template.close()  # the process keeps its template until exit; this test's goes now
    assert not template_file.parent.exists()


async def test_environments_opened_at_once_share_one_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_database, "_template", None)
    one, two = WorkflowEnvironment(workflows=[naps_v1]), WorkflowEnvironment(workflows=[naps_v1])
    try:
        await asyncio.gather(one.open(), two.open())
        kept = _database.template()
        assert kept is not None
        runs = [await env.start(naps_v1, 0) for env in (one, two)]
        assert [await run.result() for run in runs] == [[], []]
    finally:
        await one.close()
        await two.close()
    kept.close()


def _file_of(url: str) -> Path:
    """The file of a ``sqlite+aiosqlite:///file:/path?uri=true`` URL."""
    return Path(url.split("file:", 1)[1].split("?", 1)[0])


async def test_on_a_database_of_your_own(db_url: str) -> None:
    """``database_url=``: the same harness on PostgreSQL (or a SQLite file) given by the test."""
    async with WorkflowEnvironment(workflows=[checkout_v1], database_url=db_url) as env:
        assert env.server.db.dialect == ("postgresql" if db_url.startswith("postgresql") else "sqlite")
        run = await env.start(checkout_v1, Order(id="pg", amount=7))
        await run.events.payment.send(7)
        await env.skip_sleep(run)
        assert (await run.result())["charged"] == 7


# -- the documented examples run ---------------------------------------------------------------


def test_the_harness_uses_only_the_public_api() -> None:
    """``aiki.testing`` is built on what users can call too: the façade, the SDK and its wire types."""
    allowed = {"aiki", "aiki.worker_sdk", "aiki.worker_sdk.protocol", "aiki.testing", "aiki.testing._database",
               "aiki.testing._environment", "aiki.testing._records"}  # fmt: skip
    package = Path(aiki.testing.__file__).parent
    imported: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert {name for name in imported if name.split(".")[0] == "aiki"} <= allowed


def test_the_example_tests_pass() -> None:
    """``examples/test_subscription_trial.py``, run as its docstring says (pytest from the root)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/test_subscription_trial.py"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


@pytest.mark.parametrize("module", [aiki.testing, _environment], ids=lambda m: m.__name__)
def test_docstring_examples(module: Any) -> None:
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS, raise_on_error=False)
    assert results.attempted > 0
    assert results.failed == 0
