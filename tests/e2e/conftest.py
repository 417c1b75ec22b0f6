"""End-to-end fixtures: Debian's chromium driven by Playwright against real servers.

Playwright's own browser download cannot work here, so the browser is always
``/usr/bin/chromium`` (``.ci/run`` installs it). Without it the tests skip locally and
fail in CI (``GRACE_REQUIRE_SERVICES``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_unavailable
from tests.servers import ROOT, GraceServer
from tests.timing import limit

CHROMIUM = os.environ.get("GRACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts"

# Every e2e server: anonymous chat (the `make run` demo), no throttling, the slow
# deterministic writer as the model (tests/e2e/slow_backend.py).
BASE_ENV = {
    "DJANGO_SETTINGS_MODULE": "tests.e2e.server_settings",
    "GRACE_ALLOW_ANONYMOUS": "true",
    "GRACE_THROTTLE_ANON": "off",
    "GRACE_THROTTLE_USER": "off",
    "GRACE_REPLY_BACKEND": "slow",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module, closed before other modules' (async) tests run."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        service_unavailable(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        service_unavailable("the playwright package is not installed (pip install -e .[dev])")
    expect.set_options(timeout=limit(5) * 1000)  # Playwright's default 5 s, scaled
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(limit(15) * 1000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def start_server(tmp: Path, extra: dict[str, str] | None = None) -> GraceServer:
    return GraceServer(tmp, {**BASE_ENV, **(extra or {})})


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraceServer]:
    with start_server(tmp_path_factory.mktemp("e2e-chat")) as server:
        yield server


def artifact_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
