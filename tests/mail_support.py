"""The mail tests' SMTP server: a real process on loopback (``tests/smtp_server.py``), read back
from its maildir."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMTP_USER = "aiki-mailer"
SMTP_PASSWORD = "smtp-pass-7f3e9c1d"  # tests assert it never reaches a log


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    port: int
    maildir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """``AIKI_SMTP_URL`` of this server, credentials included."""
        return f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{self.port}"

    def messages(self) -> list[EmailMessage]:
        box = mailbox.Maildir(self.maildir, factory=None, create=False)
        found = []
        for key in sorted(box.keys(), key=lambda k: (self.maildir / "new" / k).stat().st_mtime_ns):
            raw = box.get_bytes(key)
            found.append(email.message_from_bytes(raw, policy=email.policy.default))
        return found  # type: ignore[return-value]

    def wait_for(self, to: str, subject: str, *, after: int = 0, timeout: float = 20) -> EmailMessage:
        """The first message to ``to`` with ``subject`` among those after the ``after`` first ones (a
        separate process delivers it: poll with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the SMTP server exited:\n{self.log.read_text(errors='replace')}"
            for msg in self.messages()[after:]:
                if msg["To"] == to and msg["Subject"] == subject:
                    return msg
            if time.monotonic() > deadline:
                seen = [(m["To"], m["Subject"]) for m in self.messages()]
                raise AssertionError(f"no mail to {to} about {subject!r} within {timeout}s; got {seen}")
            time.sleep(0.05)


def body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None, msg
    return str(part.get_content())


def link_token(text: str, path: str) -> str:
    found = re.search(re.escape(path) + r"\?token=([A-Za-z0-9_\-]+)", text)
    assert found, f"no link to {path} in:\n{text}"
    return found.group(1)


@contextmanager
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """Start ``tests/smtp_server.py`` (with AUTH) and wait until it says it listens."""
    port = free_port()
    maildir = tmp_path / "maildir"
    log = tmp_path / "smtp.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "smtp_server.py"), str(port), str(maildir), SMTP_USER, SMTP_PASSWORD],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = SmtpServer(port=port, maildir=maildir, proc=proc, log=log)
    try:
        deadline = time.monotonic() + 20
        while "ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "the SMTP server did not start (is aiosmtpd installed? `pip install -e .[dev]`):\n"
                    + log.read_text(errors="replace")
                )
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
