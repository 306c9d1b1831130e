"""What a server secret must be: long, and random enough that it cannot be guessed.

``AIKI_SECRET_KEY`` keys every stored API-key and invitation hash and signs every session cookie;
``AIKI_SECRET_KEY_PREVIOUS`` is the secret it replaced, kept while a rotation runs (see
``aiki.iam.crypto.Secrets`` and "Rotating the server secret" in the README). Both are checked
here, with errors naming the variable.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SECRET_ENV = "AIKI_SECRET_KEY"
PREVIOUS_SECRET_ENV = "AIKI_SECRET_KEY_PREVIOUS"
MIN_SECRET_LENGTH = 32
# A random secret of 32+ characters from any usual alphabet (hex, base64, words) has far more; a
# repeated character, a keyboard run or whitespace does not. Counting distinct characters catches
# those placeholders without judging real secrets.
MIN_DISTINCT_CHARACTERS = 16
GENERATE_HINT = "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"


def secret_problem(value: str) -> str | None:
    """Why ``value`` cannot be a server secret, or None when it can."""
    stripped = value.strip()
    if not stripped:
        return "is empty or only whitespace"
    if len(stripped) < MIN_SECRET_LENGTH:
        return f"must be at least {MIN_SECRET_LENGTH} characters (not counting surrounding whitespace)"
    distinct = len(set(stripped))
    if distinct < MIN_DISTINCT_CHARACTERS:
        return (
            f"has only {distinct} distinct characters; a random secret has at least {MIN_DISTINCT_CHARACTERS} "
            "(a repeated or patterned value can be guessed)"
        )
    return None


def check_secret(variable: str, value: str) -> str | None:
    """The message for ``variable`` holding an unusable secret ``value`` (the value itself is never quoted)."""
    problem = secret_problem(value)
    return None if problem is None else f"{variable} {problem}: {GENERATE_HINT}"


def new_secret() -> str:
    """A fresh random server secret (64 URL-safe characters)."""
    import secrets

    return secrets.token_urlsafe(48)


def secret_file(path: Path) -> str:
    """The secret kept in ``path``, made (random, mode 0600) when the file does not exist.

    The file is created readable by its owner alone, atomically (two processes starting together
    agree on one secret), and its mode is narrowed to 0600 when it is found wider. The secret is
    never printed. Raises ``ValueError`` naming the file when it holds no usable secret.
    """
    value = new_secret()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        value = path.read_text().strip()
        problem = check_secret(str(path), value)
        if problem is not None:
            raise ValueError(f"{problem}; or delete the file and a new secret is made") from None
        return value
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value
