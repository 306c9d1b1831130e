"""An IAM-enabled harness: the embedded server with ``iam=``, an injectable clock, and helpers to
sign people up, open sessions and mint API keys through the public API."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from aiki.iam.config import IamConfig
from aiki.iam.mail import MemoryOutbox
from aiki.iam.throttle import ACTIONS
from aiki.platform.domain.ids import now_ms
from tests.conftest import AikiHarness

API = "/api/v1"
PASSWORD = "correct horse battery staple"
TEST_SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
BASE_URL = "http://aiki"
# Tests sign many people up and log them in from one address within a second: lift the
# per-action throttles (tests of the throttles set their own).
RELAXED_LIMITS: dict[str, Any] = {
    "login_max_per_ip": 10_000,
    **{f"throttle_{action}_{scope}": 0 for action in ACTIONS for scope in ("per_ip", "global")},
}


def token_in(text: str, path: str) -> str:
    """The ``token`` of the first link to ``path`` in a mail's text."""
    found = re.search(re.escape(path) + r"\?token=([A-Za-z0-9_\-]+)", text)
    assert found, f"no link to {path} in:\n{text}"
    return found.group(1)


@dataclass
class Person:
    """A signed-up person: their session client and where they landed."""

    email: str
    password: str
    http: httpx.AsyncClient
    user_id: str
    org_id: str | None
    namespace_id: str | None


class IamHarness(AikiHarness):
    """``outbox`` keeps the mail the server sent (verification links, invitations, resets).

    Email verification is on, as in production: ``signup`` follows the mailed link. Pass
    ``email_verification=False`` where the test is about something else and needs the old flow.
    """

    def __init__(self, db: str, url: str, *, server_options: dict[str, Any] | None = None, **config: Any) -> None:
        options: dict[str, Any] = {
            "secret_key": TEST_SECRET,
            "base_url": BASE_URL,
            "secure_cookies": False,  # the test clients talk plain http://aiki
            **RELAXED_LIMITS,
        }
        options.update(config)
        super().__init__(db, url, iam=IamConfig(**options), **(server_options or {}))
        assert self.server.iam is not None
        self.iam = self.server.iam
        self.offset_ms = 0
        self.iam.clock = lambda: now_ms() + self.offset_ms
        self.outbox = MemoryOutbox()
        self.iam.mailer = self.outbox
        self._clients: list[httpx.AsyncClient] = []

    def advance(self, ms: int) -> None:
        """Move the IAM clock forward (sessions, keys, invitations and rate limits read it)."""
        self.offset_ms += ms

    def new_http(self, headers: dict[str, str] | None = None, *, ip: str = "127.0.0.1") -> httpx.AsyncClient:
        """A client of the in-process server; ``ip`` is the client address the server sees."""
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.handler, client=(ip, 123)), base_url=BASE_URL, headers=headers or {}
        )
        self._clients.append(http)
        return http

    def key_http(self, key: str) -> httpx.AsyncClient:
        return self.new_http({"authorization": f"Bearer {key}"})

    def session_http(self) -> httpx.AsyncClient:
        """A client for a session: it sends our ``Origin``, as a browser on our pages does (unsafe
        requests made with the session cookie need it, ``aiki.api.auth``)."""
        return self.new_http({"origin": BASE_URL})

    def last_token(self, email: str, path: str) -> str:
        """The token of the newest mail to ``email`` that links to ``path`` (e.g. ``/ui/verify-email``)."""
        for mail in reversed(self.outbox.to(email)):
            if path in mail.text:
                return token_in(mail.text, path)
        raise AssertionError(f"no mail to {email} links to {path}; sent: {[m.subject for m in self.outbox.sent]}")

    async def signup(self, email: str, password: str = PASSWORD, **extra: Any) -> Person:
        """Sign up through the API and, with verification on, follow the mailed link (which signs in)."""
        http = self.session_http()
        resp = await http.post(f"{API}/auth/signup", json={"email": email, "password": password, **extra})
        if resp.status_code == 202:
            token = self.last_token(email.strip().lower(), "/ui/verify-email")
            resp = await http.post(f"{API}/auth/verify-email", json={"token": token})
            assert resp.status_code == 200, resp.text
        else:
            assert resp.status_code == 201, resp.text
        body = resp.json()
        return Person(
            email=email,
            password=password,
            http=http,
            user_id=body["user"]["id"],
            org_id=body["organization"]["id"],
            namespace_id=body["namespace"]["id"],
        )

    async def login(self, email: str, password: str = PASSWORD) -> httpx.AsyncClient:
        http = self.session_http()
        resp = await http.post(f"{API}/auth/login", json={"email": email, "password": password})
        assert resp.status_code == 200, resp.text
        return http

    async def create_key(
        self, person: Person, role: str, *, namespace_id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        ns = namespace_id or person.namespace_id
        resp = await person.http.post(
            f"{API}/namespaces/{ns}/api-keys", json={"name": f"{role} key", "role": role, **extra}
        )
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def invite_and_join(
        self, owner: Person, email: str, *, role: str = "member", namespace_role: str | None = None
    ) -> Person:
        """Invite ``email`` into the owner's organization (and namespace, with ``namespace_role``), sign up, accept."""
        body: dict[str, Any] = {"email": email, "role": role}
        if namespace_role is not None:
            body.update(namespace_id=owner.namespace_id, namespace_role=namespace_role)
        resp = await owner.http.post(f"{API}/organizations/{owner.org_id}/invitations", json=body)
        assert resp.status_code == 201, resp.text
        token = resp.json()["token"]
        person = await self.signup(email)
        resp = await person.http.post(f"{API}/invitations/accept", json={"token": token})
        assert resp.status_code == 200, resp.text
        person.org_id, person.namespace_id = owner.org_id, owner.namespace_id
        return person

    async def close(self) -> None:
        for http in self._clients:
            await http.aclose()
        await self.iam.aclose()
        await super().close()


async def rows(h: IamHarness, query: Any) -> list[dict[str, Any]]:
    """The rows a SQLAlchemy ``query`` reads from the harness' database."""
    async with h.iam.db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]
