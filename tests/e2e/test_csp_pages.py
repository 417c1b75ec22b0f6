"""Under the strict Content-Security-Policy, in a real browser, every page still works and
the browser reports no violation: the chat page, the admin, its live event feed (an
inline script with the nonce, a websocket) and the Swagger API docs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import start_server
from tests.servers import GraceServer, manage

pytestmark = pytest.mark.slow

PASSWORD = "csp-test-password-123"  # noqa: S105 - a throwaway account of a test server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraceServer]:
    with start_server(tmp_path_factory.mktemp("e2e-csp")) as server:
        env = {**server.env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
        manage(
            env, "createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.com"
        )
        yield server


@pytest.fixture
def violations(page: Any) -> list[str]:
    """CSP violations the page reports (the event and the console line Chromium writes)."""
    found: list[str] = []

    def report(text: str) -> None:
        found.append(text)

    page.expose_function("reportViolation", report)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', function (e) {"
        " window.reportViolation(e.violatedDirective + ' ' + (e.blockedURI || 'inline')"
        " + ' ' + (e.sample || '')); });"
    )
    page.on(
        "console",
        lambda message: (
            found.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return found


def login(page: Any, server: GraceServer) -> None:
    page.goto(f"{server.url}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")


def assert_strict(response: Any) -> None:
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_chat_page_runs_its_script(page, server, violations):
    assert_strict(page.goto(f"{server.url}/"))
    page.fill("textarea", "hello")
    page.keyboard.press("Enter")
    page.wait_for_selector(".message-assistant:not(.streaming)", state="attached")
    assert page.evaluate("document.querySelector('script[src$=\"chat.js\"]') !== null")
    assert violations == []


def test_admin_pages_and_the_live_feed(page, server, violations):
    login(page, server)
    for path in ("/admin/grace/errorlog/", "/admin/executor/taskrecord/", "/admin/ops/dashboard/"):
        page.goto(f"{server.url}{path}")
        assert page.locator("#content").count() == 1
    assert_strict(page.goto(f"{server.url}/admin/ops/events/"))
    page.wait_for_function("document.getElementById('feed-state').textContent === 'live'")
    # the nonce'd <style> of the operations pages applied
    assert page.evaluate(
        "getComputedStyle(document.querySelector('.grace-ops table')).width !== 'auto'"
    )
    assert violations == []


def test_api_docs_render_offline(page, server, violations):
    """Swagger UI comes from the server itself: with every other host unreachable the
    docs list each operation of the schema, and an operation shows its error responses."""
    from playwright.sync_api import expect

    outside: list[str] = []

    def only_the_server(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    assert_strict(page.goto(f"{server.url}/api/docs"))
    page.wait_for_selector(".opblock", state="visible")
    schema = httpx.get(f"{server.url}/api/openapi.json").json()
    expect(page.locator(".opblock")).to_have_count(
        sum(len(operations) for operations in schema["paths"].values())
    )
    post = page.locator("#operations-chat-chat_post")
    post.locator(".opblock-summary").click()
    for status in ("200", "401", "422", "429", "503"):
        expect(post.locator(f"tr.response[data-code='{status}']")).to_be_visible()
    expect(post.locator("tr.response[data-code='429']")).to_contain_text("Retry-After")
    assert outside == []
    assert violations == []
