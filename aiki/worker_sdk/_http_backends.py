"""How the client's requests travel: aiohttp to a server on the network, httpx in-process.

A worker sends several requests per run (claims, task records, transitions), so the CPU each
request costs on the worker's side bounds how fast runs move. Measured on this project's bench
machine against the same server, aiohttp spends about 0.17 ms of client CPU per request and httpx
about 0.95 ms. ``client(url=...)`` therefore uses aiohttp. httpx stays for ``client(handler=...)``
(its ASGI transport calls an app in-process, with no network) and for ``client(transport=...)``
(any httpx transport, such as ``httpx.MockTransport`` in tests).

Both answer with an :class:`HttpAnswer` and raise :class:`ServerUnavailableError` for anything
that kept the request from getting an answer (refused or reset connection, timeout).
:func:`send_retrying_unavailable` sends a request again after a 503 answer (the server's database
is restarting or its connections are all busy; the request changed nothing), with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any, NamedTuple, Protocol

import httpx

from aiki.worker_sdk.errors import ServerUnavailableError

# Below the 5 s after which uvicorn (the server's default) closes an idle connection, so a request
# is not sent on a connection the server is closing at that moment.
_KEEPALIVE_S = 4.0


class HttpAnswer(NamedTuple):
    status: int
    body: bytes
    reason: str
    retry_after: str | None


class HttpBackend(Protocol):
    async def send(
        self, method: str, path: str, body: bytes | None, params: dict[str, str] | None, timeout: float | None
    ) -> HttpAnswer: ...

    async def aclose(self) -> None: ...


_JSON = {"content-type": "application/json"}


class HttpxBackend:
    """Requests through an httpx client (in-process ASGI app, or any httpx transport)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def send(
        self, method: str, path: str, body: bytes | None, params: dict[str, str] | None, timeout: float | None
    ) -> HttpAnswer:
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = await self._http.request(
                method, path, content=body, headers=_JSON if body is not None else None, params=params, **kwargs
            )
        except httpx.TransportError as e:
            raise ServerUnavailableError(f"{type(e).__name__}: {e}") from e
        return HttpAnswer(
            response.status_code, response.content, response.reason_phrase, response.headers.get("retry-after")
        )

    async def aclose(self) -> None:
        await self._http.aclose()


class AiohttpBackend:
    """Requests over the network through one aiohttp session (created on first use, in the loop)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        self._base = base_url.rstrip("/")
        self._headers = headers
        self._timeout_s = timeout_s
        self._session: Any = None
        self._proxy: dict[str, Any] = {}

    def _open(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=_KEEPALIVE_S)
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                # The API sets no cookies a client needs; keeping none saves work per answer.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._proxy = _proxy_from_env(self._base)
        return self._session

    async def send(
        self, method: str, path: str, body: bytes | None, params: dict[str, str] | None, timeout: float | None
    ) -> HttpAnswer:
        import aiohttp

        session = self._open()
        # A redirect is answered as itself (an unexpected response), never followed: following one
        # would resend a POST as a bodiless GET, possibly to another host.
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        if body is not None:
            kwargs["data"] = body
            kwargs["headers"] = _JSON
        if params:
            kwargs["params"] = params
        if self._proxy:
            kwargs.update(self._proxy)
        try:
            async with session.request(method, self._base + path, **kwargs) as response:
                content = await response.read()
                return HttpAnswer(response.status, content, response.reason or "", response.headers.get("retry-after"))
        except (TimeoutError, aiohttp.ClientError) as e:
            raise ServerUnavailableError(f"{type(e).__name__}: {e}") from e

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def __del__(self) -> None:
        # Dropped without aclose(): close the session's sockets here, quietly. aiohttp would log
        # "Unclosed client session" and "Unclosed connector" at garbage collection, noise that
        # says nothing to a script that merely ended without closing its client. (A client that
        # never sent a request has no session at all.)
        session = self._session
        if session is None or session.closed:
            return
        self._session = None
        connector = session.connector
        session.detach()
        if connector is not None:
            with contextlib.suppress(Exception):
                connector._close()


UNAVAILABLE_ATTEMPTS = 6


async def send_retrying_unavailable(
    backend: HttpBackend,
    method: str,
    path: str,
    body: bytes | None,
    params: dict[str, str] | None,
    timeout: float | None,
    *,
    attempts: int = UNAVAILABLE_ATTEMPTS,
    first_delay: float = 0.1,
    max_delay: float = 2.0,
) -> HttpAnswer:
    """Send a request, and again while the server answers 503 Service Unavailable, with backoff.

    A 503 from an Aiki server means the request did not get its transaction done (no database
    connection came free, the database is restarting), so sending it again is safe. The wait
    honours ``Retry-After`` when the server gives one, else doubles from ``first_delay``, with
    jitter so that many clients do not come back at once; after ``attempts`` answers the last 503
    is returned (the caller raises ``ServerUnavailableError``).
    """
    delay = first_delay
    attempt = 1
    while True:
        answer = await backend.send(method, path, body, params, timeout)
        if answer.status != 503 or attempt >= attempts:
            return answer
        wait = min(_retry_after(answer.retry_after, delay), max_delay)
        await asyncio.sleep(wait * random.uniform(0.5, 1.0))
        delay = min(delay * 2, max_delay)
        attempt += 1


def _retry_after(header: str | None, default: float) -> float:
    if header is None:
        return default
    try:
        return max(float(header), default)
    except ValueError:  # an HTTP date: not sent by Aiki servers
        return default


def _proxy_from_env(base_url: str) -> dict[str, Any]:
    """The proxy for ``base_url`` that ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` (and ``.netrc``
    for the proxy's credentials) name, as httpx would use it; read once per session.

    aiohttp's ``trust_env=True`` looks all of that up again for every request, which cost a worker
    more CPU than the request itself.
    """
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        proxy, auth = get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return {}
    return {"proxy": proxy, "proxy_auth": auth} if auth is not None else {"proxy": proxy}
