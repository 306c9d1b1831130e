"""Fixtures of the dashboard tests. Browser tests are plain (sync) functions: Playwright's sync API
must not run inside an asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests import db_support
from tests.dashboard.browser import Procs, launch_chromium

T = TypeVar("T")


def in_thread(coro: Coroutine[Any, Any, T]) -> T:
    # Playwright's sync API keeps an event loop running in the main thread: run ours beside it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of this test alone; dropped afterwards."""
    name = in_thread(db_support.create_pg_database("aiki_dash"))
    try:
        yield db_support.pg_url(name)
    finally:
        in_thread(db_support.drop_pg_database(name))


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    group = Procs(tmp_path)
    try:
        yield group
    finally:
        group.stop()
        print(group.output())


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    # A CSP violation or a script error fails the test: the pages must work under their own policy.
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield page
    finally:
        context.close()
    real = [e for e in errors if "favicon" not in e]
    assert not real, f"browser errors: {real}"
