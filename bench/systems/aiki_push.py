"""Aiki push (serverless): an `aiki server` process delivers each run as a signed POST to the SDK's
``endpoint(...)`` app served by uvicorn in another process; this process is the client.

The deployment of `aiki_http.py` with the `aiki worker` process replaced by the endpoint: the same
server, the same workflows, the same client calls, so the scenarios' figures sit beside the pull
worker's. The endpoint is registered through ``POST /api/v1/endpoints`` with a concurrency of
``--concurrency`` (the pull worker's slots) and records with a worker API key.
"""

import os
import socket

import httpx

from aiki import client
from bench.systems import SystemConfig
from bench.systems.aiki_http import BENCH_SECRET, AikiHttpSystem
from bench.systems.processes import Child, free_port
from bench.systems.push_endpoint_app import API_KEY_ENV, SECRET_ENV, SERVER_URL_ENV, VERSIONS

ENDPOINT_APP = "bench.systems.push_endpoint_app:build"


async def _keys(url: str) -> tuple[str, str]:
    """Sign up a team on the fresh server; an admin key and a worker key of its namespace."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = {"email": "bench-push@example.com", "password": "correct horse battery staple"}
        signed = await http.post("/api/v1/auth/signup", json=body)
        signed.raise_for_status()
        namespace_id = signed.json()["namespace"]["id"]
        # A Secure cookie over plain http: sent by hand, from the server's origin.
        headers = {"cookie": signed.headers["set-cookie"].split(";")[0], "origin": url}
        keys = []
        for role in ("admin", "worker"):
            made = await http.post(
                f"/api/v1/namespaces/{namespace_id}/api-keys",
                json={"name": f"bench-{role}", "role": role},
                headers=headers,
            )
            made.raise_for_status()
            keys.append(made.json()["key"])
        return keys[0], keys[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class AikiPushSystem(AikiHttpSystem):
    async def start(self) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = Child(
            "aiki-server",
            ["-m", "aiki.cli", "server", "--port", str(port), "--database-url", self._config.db_url],
            {
                "AIKI_LOG_LEVEL": "WARNING",
                "AIKI_SECRET_KEY": BENCH_SECRET,
                "AIKI_BASE_URL": url,
                "AIKI_EMAIL_VERIFICATION": "off",
                "AIKI_ENDPOINTS_ALLOW_PRIVATE": "1",  # the endpoint listens on 127.0.0.1
            },
        )
        self._children.append(server)

        async def healthy() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{url}/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await server.wait_until(healthy)
        admin_key, worker_key = await _keys(url)
        endpoint_port = free_port()
        admin = {"authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=admin) as http:
            made = await http.post(
                "/api/v1/endpoints",
                json={
                    "url": f"http://127.0.0.1:{endpoint_port}/",
                    "versions": VERSIONS,
                    "concurrency": self._config.concurrency,
                },
            )
            made.raise_for_status()
            secret: str = made.json()["secret"]
        app = Child(
            "aiki-endpoint",
            [
                "-m",
                "uvicorn",
                ENDPOINT_APP,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(endpoint_port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
                "--no-access-log",
                "--backlog",
                str(max(2048, self._config.concurrency * 4)),
            ],
            {
                SERVER_URL_ENV: url,
                API_KEY_ENV: worker_key,
                SECRET_ENV: secret,
                "AIKI_LOG_LEVEL": os.environ.get("BENCH_PUSH_LOG_LEVEL", "WARNING"),
            },
        )
        self._children.append(app)

        async def listening() -> bool:
            return _listening(endpoint_port)

        await app.wait_until(listening)
        self._client = client(url=url, api_key=admin_key)


def create(config: SystemConfig) -> AikiPushSystem:
    return AikiPushSystem(config)
