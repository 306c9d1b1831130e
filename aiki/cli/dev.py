"""``aiki dev``: the server on SQLite with IAM on, and the example workflows on an in-process worker."""

from __future__ import annotations

import os
from typing import Any

from aiki.cli.serving import iam_config, serve
from aiki.cli.settings import CliError


def _dev_secret(url: str) -> str:
    """``AIKI_SECRET_KEY``, or a random secret kept beside the dev database (keys survive restarts).

    One per checkout, made on first start with mode 0600 and never printed; ``.gitignore`` keeps
    ``*.secret`` and ``.aiki-dev-secret`` out of git (``aiki.iam.server_secret.secret_file``).
    """
    from pathlib import Path

    from aiki.iam.server_secret import secret_file

    if os.environ.get("AIKI_SECRET_KEY"):
        return os.environ["AIKI_SECRET_KEY"]
    _, _, path = url.partition(":///")
    target = (
        Path(f"{path}.secret") if url.startswith("sqlite") and path and path != ":memory:" else Path(".aiki-dev-secret")
    )
    try:
        return secret_file(target)
    except (OSError, ValueError) as exc:
        raise CliError(f"the dev secret file {target}: {exc}") from None


async def run_dev(url: str, host: str, port: int, demo: bool, mail: dict[str, Any] | None = None) -> None:
    """``aiki dev``: a server with IAM on and an in-process worker serving the example workflows."""
    from aiki.api.server import server
    from aiki.dev_examples import EXAMPLE_WORKFLOWS, start_demo_runs
    from aiki.iam.keys import replace_server_key
    from aiki.platform.db.engine import Database
    from aiki.platform.db.tables import DEFAULT_NAMESPACE_ID
    from aiki.worker_sdk import client, worker

    base_url = os.environ.get("AIKI_BASE_URL") or f"http://{host}:{port}"
    iam = iam_config(
        secret_key=_dev_secret(url),
        base_url=base_url,
        # Dev serves plain http on localhost: a Secure cookie would never come back.
        secure_cookies=base_url.startswith("https://"),
        claim_default_organization=True,
        **(mail or {}),
    )
    # A developer's endpoints run on this machine (uvicorn on localhost): private URLs are allowed.
    aiki_server = server(db=Database(url), iam=iam, endpoints_allow_private=True)
    await aiki_server.runtime.start()
    assert aiki_server.iam is not None
    if iam.smtp_url is None:
        from aiki.iam.mail import LogMailer

        # A developer's own machine: the verification link goes to the log instead of a mailbox.
        aiki_server.iam.mailer = LogMailer()
    # The in-process example worker authenticates like any other: a worker key of `default`.
    dev_key = await replace_server_key(aiki_server.iam, DEFAULT_NAMESPACE_ID, "aiki dev worker", "worker")
    aiki_client = client(handler=aiki_server.handler, api_key=dev_key.key)
    worker_handle = await worker(workflows=list(EXAMPLE_WORKFLOWS), concurrency=20).spawn(aiki_client)

    async def started() -> None:
        print(f"\n  Aiki dev server: http://{host}:{port}   (database: {url})")
        print(f"  Dashboard:       http://{host}:{port}/ui/   (sign up there: the first account owns `default`)")
        print(f"  OpenAPI:         http://{host}:{port}/schema/openapi.json")
        print("  IAM is on. Or sign up from a shell (the first account owns `default`, where the examples run):")
        print(f"    curl -s -c cookies.txt -X POST http://{host}:{port}/api/v1/auth/signup \\")
        body = '{"email": "you@example.com", "password": "choose-a-password"}'
        print(f"      -H 'content-type: application/json' -d '{body}'")
        if iam.email_verification and iam.smtp_url is None:
            print("  No AIKI_SMTP_URL: verification links are written to this log (look for 'mail not sent');")
            print("  POST the token to /api/v1/auth/verify-email (or open the link) to sign in.")
        print(
            "  then create API keys with POST /api/v1/namespaces/{namespace_id}/api-keys "
            f"(with -b cookies.txt -H 'origin: {base_url}': a session's unsafe requests come from our origin)."
        )
        print(f"  Dev worker key (namespace default, role worker; replaced at every start): {dev_key.key}")
        print(
            "  An in-process worker serves the example workflows: "
            + ", ".join(f"{v.name}@{v.version}" for v in EXAMPLE_WORKFLOWS)
        )
        print("  Start a run:")
        print(
            f"    curl -s -X POST http://{host}:{port}/api/v1/runs -H 'content-type: application/json' "
            f"-H 'authorization: Bearer {dev_key.key}' \\"
        )
        print(
            '      -d \'{"workflow": "subscription-trial", "version": "1.0.0", '
            '"input": {"user_id": "u1", "trial_period": "PT5S"}}\''
        )
        print(f"  List runs:  curl -s -H 'authorization: Bearer {dev_key.key}' http://{host}:{port}/api/v1/runs\n")
        if demo:
            ids = await start_demo_runs(aiki_client)
            print(f"  Started {len(ids)} demo runs: " + ", ".join(ids) + "\n")

    try:
        await serve(aiki_server.handler, host, port, on_started=started, on_stopping=aiki_server.begin_shutdown)
    finally:
        await worker_handle.stop()
        await aiki_client.close()
        await aiki_server.runtime.stop()
        await aiki_server.db.dispose()
