"""An anonymous flood of sign-ups and logins does not starve an authenticated tenant.

Runs ``bench/auth_flood.py`` (the ``signup_flood`` bench scenario) with small numbers. Argon2 on
the event loop (each computation tens of milliseconds of CPU) made the tenant's median request wait
behind the hashes: about 50x slower on a 2-core machine, with the loop stalled hundreds of times.

The bounds are loose on purpose, for a shared 2-core machine: the flood's clients run on the same
event loop as the server (in-process ASGI) and the hashing thread takes a core, so the tenant pays
something; the test asserts its median stays within 2x of the quiet median plus a fixed
allowance, and that the loop is late by more than 25 ms in at most 5 % of the probes.
"""

from __future__ import annotations

from bench.auth_flood import measure

# Every flood request reaches argon2: the throttles are off, only the hashing pool protects the loop.
NO_THROTTLES = {
    "login_max_per_ip": 1_000_000,
    "login_free_failures": 1_000_000,
    **{
        f"throttle_{action}_{scope}": 0
        for action in ("signup", "login", "password_reset", "invitation_accept")
        for scope in ("per_ip", "global")
    },
}
ALLOWANCE_MS = 20.0


async def test_a_tenant_keeps_its_latency_while_anonymous_signups_flood(db_url: str) -> None:
    figures = await measure(db_url, tenant_requests=120, flood_concurrency=6, warmup=10, iam_overrides=NO_THROTTLES)
    assert figures["flood_requests"] >= 6, figures  # the flood really ran (and hashed)
    assert figures.get("flood_status_201", 0) > 0, figures
    assert figures["flood_p50_ms"] <= 2 * figures["alone_p50_ms"] + ALLOWANCE_MS, figures
    # Measured: 0-2 stalls in ~100 probes with the pool; 16-96 (16-32 %) with argon2 on the loop.
    assert figures["flood_stalls"] <= max(4, figures["flood_probes"] // 20), figures
