"""A real SMTP server for the mail tests: aiosmtpd on loopback, every message into a maildir.

Run as its own process: ``python tests/smtp_server.py PORT MAILDIR [USER PASSWORD]``. With a user
and password it requires ``AUTH LOGIN``/``PLAIN`` (allowed without TLS: loopback only) and refuses
mail from clients that did not authenticate. Prints ``ready`` once it listens.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main() -> None:
    port, mail_dir = int(sys.argv[1]), sys.argv[2]
    credentials = (sys.argv[3], sys.argv[4]) if len(sys.argv) == 5 else None
    handler = Mailbox(mail_dir)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == credentials
        return AuthResult(success=ok, handled=False)

    def factory() -> SMTP:
        if credentials is None:
            return SMTP(handler, hostname="aiki-test-smtp")
        return SMTP(
            handler,
            hostname="aiki-test-smtp",
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=False,
        )

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
