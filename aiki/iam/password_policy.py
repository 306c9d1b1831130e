"""What a new password must be (OWASP ASVS 5, level 2, V6.2).

- at least :data:`MIN_LENGTH` (12) characters, at most :data:`MAX_LENGTH` (256): counted in
  characters (code points), any character allowed but NUL; nothing is trimmed or composed;
- not one of the 10,000 most common passwords, compared case-insensitively
  (``aiki/iam/data/common_passwords.txt``: the first 10,000 lines of Django 5.2's
  ``common-passwords.txt.gz``, Royce Williams' list ordered by frequency, BSD-3-Clause);
- not containing the local part of the account's email, case-insensitively, when that part is
  3 characters or longer (``alice@example.com`` may not choose ``Alice-2026-spring``).

No composition rules (ASVS forbids them). Only new passwords are checked: login never is.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiki.platform.domain.errors import InputInvalid

MIN_LENGTH = 12
# Bounds the work one request can ask of the hasher; longer passwords are refused, never cut.
MAX_LENGTH = 256
# A local part shorter than this ("al@...") would forbid too many innocent passwords.
MIN_LOCAL_PART = 3
FIELD = "$.password"


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of the most common passwords, lower-cased."""
    text = resources.files("aiki.iam").joinpath("data/common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def check_policy(password: str, *, email: str | None = None) -> None:
    """Raise :class:`InputInvalid` on ``$.password`` with the reason when ``password`` breaks the policy.

    ``email`` is the account's (normalized) address, when known.
    """
    if "\x00" in password:
        raise InputInvalid("password must not contain NUL characters", field=FIELD)
    if len(password) < MIN_LENGTH:
        raise InputInvalid(f"password must be at least {MIN_LENGTH} characters", field=FIELD)
    if len(password) > MAX_LENGTH:
        raise InputInvalid(f"password must be at most {MAX_LENGTH} characters", field=FIELD)
    folded = password.casefold()
    if folded in common_passwords() or password.lower() in common_passwords():
        raise InputInvalid("password is one of the most common passwords; choose another", field=FIELD)
    local = (email or "").rpartition("@")[0] if "@" in (email or "") else (email or "")
    if len(local) >= MIN_LOCAL_PART and local.casefold() in folded:
        raise InputInvalid("password must not contain the email address's name (before the @)", field=FIELD)
