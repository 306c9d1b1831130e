"""The shape the codebase keeps: small modules, and the database asked about only by its stores.

Cyclomatic complexity (at most 12 per function in ``aiki/``) is ruff's C901, configured in
pyproject.toml; these are the rules ruff cannot hold.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiki

ROOT = Path(aiki.__file__).resolve().parent
MAX_LINES = 500
# The store implementations: the only code that knows which database it runs on.
STORES = (ROOT / "platform" / "db" / "postgres", ROOT / "platform" / "db" / "sqlite")
DIALECT_TEST = re.compile(r"\bis_postgres\b|\bdialect\s*[!=]=")


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_the_package_has_modules_to_check() -> None:
    assert len(_modules()) > 100


def test_no_module_is_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


def test_only_the_store_implementations_ask_which_database_they_are_on() -> None:
    asking = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _modules()
        if not any(p.is_relative_to(store) for store in STORES)
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if DIALECT_TEST.search(line)
    ]
    assert not asking, f"a dialect test outside aiki/platform/db/postgres and sqlite: {asking}"


def test_the_checks_see_what_they_look_for() -> None:
    assert DIALECT_TEST.search("if db.is_postgres:")
    assert DIALECT_TEST.search('if conn.dialect == "postgresql":')
    assert not DIALECT_TEST.search("dialect: ClassVar[str]")
