"""`aiki server` as deployed (uvicorn, real sockets, its own logging): JSON logs that no request can
forge a line into, `X-Forwarded-For` ignored from an untrusted peer (loopback included) and
honoured from a trusted proxy, and the per-key rate limit set by `AIKI_API_RATE_LIMIT`."""

from __future__ import annotations

import json

import httpx

from tests.e2e.procs import ServerChild, WorkerProcs

FORGED_IP = "203.0.113.9"


async def _signup_ip(srv: ServerChild, email: str) -> str:
    """Sign up with a forged ``X-Forwarded-For``; the address the audit log recorded for it."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers={"x-forwarded-for": FORGED_IP}) as http:
        signed = await http.post("/api/v1/auth/signup", json={"email": email, "password": "e2e-password-123"})
        assert signed.status_code == 201, signed.text
        org_id = signed.json()["organization"]["id"]
        cookie = signed.headers["set-cookie"].split(";")[0]  # Secure, and this is plain http: by hand
        audit = await http.get(f"/api/v1/organizations/{org_id}/audit", headers={"cookie": cookie})
        assert audit.status_code == 200, audit.text
        ips = {entry["ip"] for entry in audit.json()["items"]}
        assert len(ips) == 1, audit.text
        return str(ips.pop())


async def test_server_logs_json_ignores_forwarded_for_and_limits_keys(procs: WorkerProcs) -> None:
    srv = await procs.start_server(env={"AIKI_API_RATE_LIMIT": "5"})
    # Loopback is not a proxy unless configured so (uvicorn alone trusted it).
    assert await _signup_ip(srv, "direct@e2e.example") == "127.0.0.1"

    async with procs.http(base_url=srv.url, timeout=30) as http:
        statuses = [(await http.get("/api/v1/runs")).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429], statuses

        forged = "2026-01-01T00:00:00 ERROR aiki.api: FORGED"
        resp = await http.get("/api/v1/runs/x%0a" + forged.replace(" ", "%20") + "%0d")
        assert resp.status_code == 404, resp.text
        assert resp.headers["x-content-type-options"] == "nosniff"

    lines = srv.child.stderr_text().splitlines()
    hits = [line for line in lines if "FORGED" in line]
    assert len(hits) == 1, "\n".join(lines)
    record = json.loads(hits[0])
    assert record["level"] == "INFO"
    assert record["message"].endswith("x\n" + forged + "\r")
    # Every line the server wrote is one JSON record.
    for line in lines:
        assert isinstance(json.loads(line), dict), line


async def test_a_trusted_proxy_names_the_client(procs: WorkerProcs) -> None:
    srv = await procs.start_server(env={"AIKI_TRUSTED_PROXIES": "127.0.0.1, ::1"})
    assert await _signup_ip(srv, "proxied@e2e.example") == FORGED_IP
