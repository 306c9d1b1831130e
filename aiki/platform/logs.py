"""The process's log output: one line per record, whatever the logged values hold.

Logged values come from outside (request paths are percent-decoded: ``%0a`` is a newline), so a
value could end a line and forge the next one. Two formats, chosen by ``AIKI_LOG_FORMAT``:

- ``json`` (``aiki server``'s default): one JSON object per line (``time``, ``level``, ``logger``,
  ``message``, and ``exc_info`` with the traceback), written by python-json-logger; JSON escapes
  every control character, tracebacks included.
- ``text`` (``aiki dev``'s and the other commands' default): ``time LEVEL logger: message``, with
  control characters in the message escaped (``\\n`` becomes the two characters ``\\`` ``n``). A
  traceback follows on its own lines, every one indented, so none can pass for a record.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

LOG_FORMAT_ENV = "AIKI_LOG_FORMAT"
LOG_FORMATS = ("json", "text")
LogFormat = Literal["json", "text"]

# C0, DEL, C1 and the Unicode line/paragraph separators: everything that can end or rewrite a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


class EscapingFormatter(logging.Formatter):
    """The text format: a record's message (its arguments merged in) is escaped before the line
    is assembled, so it can never span two lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        # Indented, every line of it: a line an exception's message adds cannot pass for a record
        # (records start with their time at the first column).
        return "\n".join("    " + escape_controls(line) for line in super().formatException(ei).split("\n"))


def json_formatter() -> logging.Formatter:
    """One JSON object per record (python-json-logger)."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def parse_log_format(raw: str | None, default: LogFormat) -> LogFormat:
    """``AIKI_LOG_FORMAT``'s value, checked; ``default`` when unset. Raises naming the variable."""
    value = (raw or "").strip().lower() or default
    if value == "json":
        return "json"
    if value == "text":
        return "text"
    raise ValueError(f"{LOG_FORMAT_ENV} must be json or text, got {raw!r}")


def configure(level: str, log_format: LogFormat) -> None:
    """Send every logger's records to stderr in ``log_format``, at ``level`` and above.

    Replaces the handler an earlier call installed, and only that one (a host's own handlers stay).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else EscapingFormatter(TEXT_FORMAT))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


_HANDLER_NAME = "aiki"
