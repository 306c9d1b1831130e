"""Helpers of the dashboard tests: a person signed up through the pages, CSRF tokens read from them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from tests.iam_support import BASE_URL, PASSWORD, IamHarness

UI = "/ui"
ORIGIN = {"origin": BASE_URL}
_TOKEN = re.compile(r'name="_csrf" value="([0-9a-f]+)"')
_NS = re.compile(r"/ui/ns/([^/]+)/runs")


@dataclass
class Browser:
    """One signed-in person of the dashboard, driven with plain HTTP (cookies kept by the client)."""

    http: httpx.AsyncClient
    namespace_id: str
    email: str

    async def csrf(self, path: str | None = None) -> str:
        page = await self.http.get(path or f"{UI}/ns/{self.namespace_id}/runs")
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    async def post(self, path: str, data: dict[str, str] | None = None, **kw: object) -> httpx.Response:
        token = await self.csrf()
        return await self.http.post(path, data={"_csrf": token, **(data or {})}, headers=ORIGIN, **kw)  # type: ignore[arg-type]


def csrf_of(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def signup(harness: IamHarness, email: str, **fields: str) -> Browser:
    """Sign up through the dashboard's form (and the mailed link); the client keeps the session cookie."""
    http = harness.new_http()
    resp = await http.post(f"{UI}/signup", data={"email": email, "password": PASSWORD, **fields}, headers=ORIGIN)
    assert resp.status_code == 303, resp.text
    location = resp.headers["location"]
    if location == f"{UI}/verify-email":  # verification on: follow the mailed link's button
        token = harness.last_token(email.strip().lower(), f"{UI}/verify-email")
        resp = await http.post(f"{UI}/verify-email", data={"token": token}, headers=ORIGIN)
        assert resp.status_code == 303, resp.text
        location = resp.headers["location"]
    found = _NS.search(location)
    assert found, location
    return Browser(http=http, namespace_id=found.group(1), email=email)
