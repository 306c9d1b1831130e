"""``client(url=...)`` closes its aiohttp session cleanly (issue 10, defect 12): no session before the
first request, none left after ``close()``/``async with``, and no "Unclosed client session" noise
when a client is garbage collected without being closed. Against a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from aiki.worker_sdk import RunNotFoundError, client


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async def not_found(request: web.Request) -> web.Response:
        body = '{"type":"about:blank","title":"run_not_found","status":404,"code":"run_not_found"}'
        return web.Response(status=404, text=body, content_type="application/problem+json")

    app = web.Application()
    app.router.add_get("/api/v1/runs/{run_id}", not_found)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Noise:
    """Warnings and asyncio log lines about unclosed resources raised so far."""

    def __init__(self, caught: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture) -> None:
        self._caught, self._caplog = caught, caplog

    def unclosed(self) -> list[str]:
        gc.collect()
        lines = [str(w.message) for w in self._caught]
        lines += [r.getMessage() for r in self._caplog.records if r.name == "asyncio"]
        return [line for line in lines if "nclosed" in line]


@pytest.fixture
def noise(caplog: pytest.LogCaptureFixture) -> Iterator[Noise]:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield Noise(caught, caplog)


async def _use(c: object) -> None:
    with pytest.raises(RunNotFoundError):
        await c.get_run("r1")  # type: ignore[attr-defined]


async def test_a_client_never_used_holds_no_session(url: str, noise: Noise) -> None:
    c = client(url=url)
    assert c.transport.backend._session is None  # type: ignore[attr-defined]
    del c
    gc.collect()
    await asyncio.sleep(0)
    assert noise.unclosed() == []


async def test_close_and_async_with_close_the_session(url: str, noise: Noise) -> None:
    c = client(url=url)
    await _use(c)
    session = c.transport.backend._session  # type: ignore[attr-defined]
    assert session is not None
    await c.close()
    assert session.closed
    await c.close()  # idempotent
    async with client(url=url) as c2:
        await _use(c2)
        session = c2.transport.backend._session  # type: ignore[attr-defined]
    assert session.closed
    del c, c2, session
    gc.collect()
    await asyncio.sleep(0)
    assert noise.unclosed() == []


async def test_a_used_client_dropped_without_close_logs_nothing(url: str, noise: Noise) -> None:
    c = client(url=url)
    await _use(c)
    await _use(c)
    del c
    gc.collect()
    await asyncio.sleep(0.05)
    gc.collect()
    assert noise.unclosed() == []
