"""The server secret: long and random enough (``AIKI_SECRET_KEY`` and ``AIKI_SECRET_KEY_PREVIOUS``),
the dev secret file (0600, one per checkout), and that no secret file is ever committed."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from aiki.iam.config import IamConfig, IamConfigError
from aiki.iam.server_secret import MIN_DISTINCT_CHARACTERS, secret_file

ROOT = Path(__file__).resolve().parents[2]
GOOD = "Good-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
OTHER = "Other-secret-0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BASE = {"AIKI_BASE_URL": "https://aiki.example.com"}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (" " * 40, "whitespace"),
        ("\t \n" * 20, "whitespace"),
        ("a" * 64, "distinct characters"),
        ("0123456789abcd" * 4, "distinct characters"),  # 14 distinct, 56 long
        ("  " + "x" * 10 + "0123456789abcdef" + "  ", "at least 32 characters"),  # long only with its padding
    ],
)
@pytest.mark.parametrize("variable", ["AIKI_SECRET_KEY", "AIKI_SECRET_KEY_PREVIOUS"])
def test_a_guessable_secret_is_refused_naming_the_variable_and_why(variable: str, value: str, why: str) -> None:
    env = {**BASE, "AIKI_SECRET_KEY": GOOD, variable: value}
    with pytest.raises(IamConfigError) as caught:
        IamConfig.from_env(env)
    message = str(caught.value)
    assert message.startswith(variable + " "), message
    assert why in message
    if value.strip():
        assert value.strip() not in message  # the value is never echoed


def test_sixteen_distinct_characters_are_enough() -> None:
    value = "0123456789abcdef" * 2
    assert len(set(value)) == MIN_DISTINCT_CHARACTERS
    assert IamConfig.from_env({**BASE, "AIKI_SECRET_KEY": value}).secret_key == value


def test_the_previous_secret_is_read_and_must_differ_from_the_current_one() -> None:
    config = IamConfig.from_env({**BASE, "AIKI_SECRET_KEY": GOOD, "AIKI_SECRET_KEY_PREVIOUS": OTHER})
    assert (config.secret_key, config.previous_secret_key) == (GOOD, OTHER)
    assert IamConfig.from_env({**BASE, "AIKI_SECRET_KEY": GOOD}).previous_secret_key is None
    with pytest.raises(IamConfigError, match="AIKI_SECRET_KEY_PREVIOUS is the same as AIKI_SECRET_KEY"):
        IamConfig.from_env({**BASE, "AIKI_SECRET_KEY": GOOD, "AIKI_SECRET_KEY_PREVIOUS": GOOD})


def test_the_dev_secret_file_is_made_once_owner_only_and_random(tmp_path: Path) -> None:
    path = tmp_path / "aiki.db.secret"
    first = secret_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_file(path) == first  # kept across restarts
    assert secret_file(tmp_path / "other.secret") != first  # one per checkout/database
    IamConfig(secret_key=first, base_url="https://aiki.example.com")  # passes the entropy rule


def test_a_dev_secret_file_readable_by_others_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "aiki.db.secret"
    path.write_text(GOOD + "\n")
    path.chmod(0o644)
    assert secret_file(path) == GOOD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_dev_secret_file_without_a_usable_secret_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "aiki.db.secret"
    path.write_text("   \n")
    with pytest.raises(ValueError, match=f"{path} is empty or only whitespace"):
        secret_file(path)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is needed to check that no secret is committed: install git")
    return subprocess.run([git, *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_no_secret_file_is_tracked_and_git_ignores_them() -> None:
    tracked = _git("ls-files", "--", "*.secret", ".aiki-dev-secret", "**/.aiki-dev-secret")
    assert tracked.returncode == 0, tracked.stderr
    assert tracked.stdout.split() == []
    names = ["aiki.db.secret", "examples/dev.db.secret", ".aiki-dev-secret", "sub/.aiki-dev-secret"]
    ignored = _git("check-ignore", "--no-index", *names)
    assert ignored.stdout.split() == names, ignored.stderr
