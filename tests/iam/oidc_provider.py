"""A real OpenID provider for the OIDC tests: ``oidc-provider-mock`` in its own process on loopback.

The provider requires client registration (so client secrets and redirect URIs are really checked)
and a nonce on every authorization request. Its authorization page is a form where the "user"
types the subject to sign in as; ``authorize`` submits it with httpx and stops at the redirect
back to us, returning the callback's query parameters as a browser would deliver them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

STARTUP_DEADLINE_S = 20.0
REDIRECT_URI = "http://127.0.0.1:9/auth/oidc/callback"  # never contacted: the tests stop at the redirect


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class OidcProvider:
    """Handle on a running provider process."""

    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def issuer(self) -> str:
        # The mock names itself after the Host it is reached by.
        return f"http://127.0.0.1:{self.port}"

    @property
    def localhost_issuer(self) -> str:
        """The same server reached as ``localhost``: it then signs tokens with this other issuer."""
        return f"http://localhost:{self.port}"

    def register_client(self, redirect_uri: str = REDIRECT_URI) -> RegisteredClient:
        response = httpx.post(
            f"{self.issuer}/oauth2/clients",
            json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "client_secret_basic"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return RegisteredClient(client_id=body["client_id"], client_secret=body["client_secret"])

    def set_user(self, sub: str, claims: dict[str, object]) -> None:
        """Declare the claims the provider asserts when ``sub`` signs in."""
        response = httpx.put(f"{self.issuer}/users/{quote(sub, safe='')}", json=claims)
        assert response.status_code == 204, response.text

    async def authorize(self, authorization_url: str, sub: str) -> dict[str, str]:
        """Sign in as ``sub`` on the provider's form; the query of the redirect back to the app."""
        return await self._submit(authorization_url, {"sub": sub})

    async def deny(self, authorization_url: str) -> dict[str, str]:
        """Press the form's "Deny" button; the query of the redirect back to the app."""
        return await self._submit(authorization_url, {"action": "deny"})

    async def _submit(self, authorization_url: str, form: dict[str, str]) -> dict[str, str]:
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            page = await browser.get(authorization_url)
            assert page.status_code == 200, page.text
            assert 'name="sub"' in page.text  # the sign-in form, not an error page
            answer = await browser.post(authorization_url, data=form)
        assert answer.status_code in (302, 303), answer.text
        location = answer.headers["location"]
        assert location.startswith(REDIRECT_URI.split("?")[0]), location
        return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def run_provider() -> Iterator[OidcProvider]:
    """Start the provider on a free loopback port; yield once its discovery document answers."""
    port = free_port()
    command = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--require-registration", "true", "--require-nonce", "true"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # Logs go to a file, not a pipe: the provider logs every request and a full pipe would stall it.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        provider = OidcProvider(port=port, process=process, log=log)
        try:
            _wait_until_ready(provider)
            yield provider
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(provider: OidcProvider) -> None:
    url = f"{provider.issuer}/.well-known/openid-configuration"
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        if provider.process.poll() is not None:
            provider.log.seek(0)
            err = provider.log.read().decode(errors="replace")
            raise RuntimeError(f"the OIDC provider exited with {provider.process.returncode}: {err[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the OIDC provider did not answer at {url} within {STARTUP_DEADLINE_S} s")
        time.sleep(0.05)  # polling interval between readiness probes, not a wait for an outcome
