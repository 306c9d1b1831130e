"""Sending mail: verification links, password resets, invitations, sign-up notices.

One small interface, :class:`Mailer`, and three implementations:

* :class:`SmtpMailer` — the real one, configured by ``AIKI_SMTP_URL`` and ``AIKI_EMAIL_FROM``.
  It uses the standard library's ``smtplib`` in a worker thread: mail is rare (a sign-up, a reset),
  so a thread per message costs nothing, and the server gains no dependency.
* :class:`LogMailer` — what ``aiki dev`` uses when no SMTP server is configured: each message,
  links included, is written to the log (a developer's own machine; never in ``aiki server``,
  which without SMTP uses :class:`NoMailer`: nothing sent, only subjects logged).
* :class:`MemoryOutbox` — keeps messages in a list, for in-process tests.

``AIKI_SMTP_URL`` forms: ``smtp://host:25`` (plain), ``smtp://user:pass@host:587?starttls=on``
(upgrade with STARTTLS, then log in), ``smtps://user:pass@host:465`` (TLS from the first byte).
Optional ``timeout=<seconds>`` (default 10). User and password are percent-decoded. They are never
logged: every message about the SMTP server names only ``scheme://host:port``.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("aiki.mail")

SMTP_URL_ENV = "AIKI_SMTP_URL"
EMAIL_FROM_ENV = "AIKI_EMAIL_FROM"
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_TRUE = frozenset({"1", "on", "true", "yes"})
_FALSE = frozenset({"0", "off", "false", "no"})


class MailConfigError(ValueError):
    """``AIKI_SMTP_URL`` or ``AIKI_EMAIL_FROM`` is malformed; the message names the variable (never the password)."""


@dataclass(frozen=True, slots=True)
class Email:
    """One plain-text message to one address."""

    to: str
    subject: str
    text: str


class Mailer(Protocol):
    """Sends one message. Implementations raise on failure; callers decide whether that matters."""

    async def send(self, message: Email) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """A parsed ``AIKI_SMTP_URL``. ``password`` is kept out of ``repr`` so it never reaches a log."""

    host: str
    port: int
    tls: bool  # smtps: TLS from the first byte
    starttls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0

    @property
    def display(self) -> str:
        """``scheme://host:port``: how logs and errors name the server (no credentials)."""
        return f"{'smtps' if self.tls else 'smtp'}://{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> SmtpSettings:
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise MailConfigError(f"{SMTP_URL_ENV} is not a URL like smtp://user:pass@host:587?starttls=on") from None
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise MailConfigError(
                f"{SMTP_URL_ENV} must be smtp://[user:password@]host[:port][?starttls=on] or smtps://..., "
                f"got scheme {parts.scheme!r}"
            )
        query = parse_qs(parts.query)
        unknown = set(query) - {"starttls", "timeout"}
        if unknown:
            raise MailConfigError(f"{SMTP_URL_ENV} has unknown options {sorted(unknown)} (known: starttls, timeout)")
        starttls = False
        if "starttls" in query:
            value = query["starttls"][-1].lower()
            if value not in _TRUE | _FALSE:
                raise MailConfigError(f"{SMTP_URL_ENV}: starttls must be on or off, got {value!r}")
            starttls = value in _TRUE
        if starttls and parts.scheme == "smtps":
            raise MailConfigError(f"{SMTP_URL_ENV}: smtps:// is TLS already; starttls applies to smtp:// only")
        timeout = 10.0
        if "timeout" in query:
            try:
                timeout = float(query["timeout"][-1])
            except ValueError:
                timeout = -1.0
            if not 0 < timeout <= 300:
                raise MailConfigError(f"{SMTP_URL_ENV}: timeout must be 0 to 300 seconds")
        return cls(
            host=parts.hostname,
            port=port or (587 if starttls else _DEFAULT_PORTS[parts.scheme]),
            tls=parts.scheme == "smtps",
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout_s=timeout,
        )


def _message(sender: str, mail: Email) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or None)
    msg.set_content(mail.text)
    return msg


class SmtpMailer:
    """Delivers through an SMTP server (``smtplib`` in a thread; one connection per message)."""

    def __init__(self, settings: SmtpSettings, sender: str) -> None:
        self.settings = settings
        self.sender = sender

    async def send(self, message: Email) -> None:
        await asyncio.to_thread(self._send, _message(self.sender, message))

    def _send(self, msg: EmailMessage) -> None:
        s = self.settings
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if s.tls:
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=context)
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        with client:
            if s.starttls:
                client.starttls(context=context)
            if s.username is not None:
                client.login(s.username, s.password or "")
            client.send_message(msg)


class LogMailer:
    """``aiki dev`` without SMTP: writes each message (links included) to the log instead of sending it."""

    def __init__(self, sender: str = "aiki@localhost") -> None:
        self.sender = sender

    async def send(self, message: Email) -> None:
        log.warning(
            "mail not sent (no %s configured; aiki dev logs it instead)\nTo: %s\nSubject: %s\n\n%s",
            SMTP_URL_ENV,
            message.to,
            message.subject,
            message.text,
        )


class NoMailer:
    """No SMTP configured (``aiki server`` with verification off): nothing is sent, and only the
    subject is logged: the body holds links (tokens) that must not land in a production log."""

    async def send(self, message: Email) -> None:
        log.warning("mail %r not sent: %s is not set", message.subject, SMTP_URL_ENV)


class MemoryOutbox:
    """Keeps every message in :attr:`sent`, newest last (in-process tests read links from it)."""

    def __init__(self) -> None:
        self.sent: list[Email] = []

    async def send(self, message: Email) -> None:
        self.sent.append(message)

    def to(self, address: str) -> list[Email]:
        """Messages sent to ``address``, oldest first."""
        return [m for m in self.sent if m.to == address]


async def deliver(mailer: Mailer, message: Email) -> bool:
    """Send ``message``; on failure log why (not the message: it may hold a link) and return False.

    A mail that cannot go out must not change what a request answers (sign-up says the same for
    every address), so callers only learn whether it went.
    """
    try:
        await mailer.send(message)
    except Exception as exc:  # SMTP refusals, timeouts, DNS... all mean the same here
        log.error("could not send mail %r: %s: %s", message.subject, type(exc).__name__, exc)
        return False
    return True
