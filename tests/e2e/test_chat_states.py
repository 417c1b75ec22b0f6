"""The page's degraded banner, error state with Retry, and login, in headless Chromium."""

from __future__ import annotations

import re
import shutil

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import artifact_path, start_server
from tests.e2e.slow_backend import WORDS
from tests.servers import ROOT, manage

pytestmark = [pytest.mark.slow]

FULL_REPLY = " ".join(WORDS)
PASSWORD = "correct-horse-battery-9"  # noqa: S105 - a test user's password


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    """The model fails on every message (GRACE_FAULTS=respond=error): the fallback answers."""
    tmp = tmp_path_factory.mktemp("e2e-faults")
    with start_server(tmp, {"GRACE_FAULTS": "respond=error"}) as server:
        yield server


@pytest.fixture(scope="module")
def login_server(tmp_path_factory):
    """Anonymous chat off: the page needs a login."""
    tmp = tmp_path_factory.mktemp("e2e-login")
    with start_server(tmp, {"GRACE_ALLOW_ANONYMOUS": "false"}) as server:
        manage(
            server.env,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; "
            f"get_user_model().objects.create_user('ada', password='{PASSWORD}')",
        )
        yield server


def send(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def test_a_degraded_reply_shows_the_failed_parts_and_a_copyable_request_id(browser, fault_server):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=fault_server.url)
    page = context.new_page()
    try:
        page.goto(f"{fault_server.url}/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        send(page, "What is Grace?")
        reply = page.locator(".message-assistant").last
        expect(reply).not_to_have_class(re.compile("streaming"))
        banner = page.locator("#degraded")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("model reply (error)")
        expect(banner).to_contain_text("response_fallback")
        request_id = page.locator("#degraded-request-id").inner_text()
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        expect(reply.locator(".meta")).to_contain_text(request_id)
        expect(reply.locator(".badge-degraded")).to_have_text("Degraded")
        # The fallback answered for real (not the slow writer, which failed).
        assert reply.locator(".body").inner_text() != FULL_REPLY
        expect(reply.locator(".badge-backend")).to_have_text("fallback")

        banner.get_by_role("button", name="Copy the request ID").click()
        expect(banner.get_by_role("button", name="Copy the request ID")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == request_id

        shot = artifact_path("chat-degraded.png")
        page.screenshot(path=str(shot))
        docs = ROOT / "docs"
        if not (docs / "screenshot.png").exists():
            docs.mkdir(exist_ok=True)
            shutil.copy(shot, docs / "screenshot.png")
    finally:
        context.close()


def test_a_dropped_connection_mid_reply_shows_an_error_with_retry(page, chat_server):
    killed: list[bool] = []

    def proxy(socket):
        server = socket.connect_to_server()

        def to_page(message):
            socket.send(message)
            if '"token"' in str(message) and not killed:
                killed.append(True)
                socket.close(code=1011, reason="test drops the connection")

        server.on_message(to_page)
        socket.on_message(lambda message: server.send(message))

    page.route_web_socket(re.compile(r"/ws/chat/"), proxy)
    page.goto(f"{chat_server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "This reply will be cut off")

    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The connection dropped before the reply finished.")
    expect(page.locator("#error-request-id")).to_have_text(re.compile(r"[0-9a-f]{32}"))
    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_focused()
    # The page reconnects by itself; Retry sends the same message again.
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    retry.click()
    expect(error).to_be_hidden()
    expect(page.locator(".message-assistant .body").last).to_have_text(FULL_REPLY)
    expect(page.locator(".message-user")).to_have_count(1)
    expect(page.locator(".message-user .body")).to_have_text("This reply will be cut off")


def test_login_is_required_when_anonymous_chat_is_off(page, login_server):
    page.goto(f"{login_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not match")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{login_server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    expect(page.locator(".account-name")).to_have_text("ada")
    send(page, "Hello as Ada")
    expect(page.locator(".message-assistant .body").last).to_have_text(FULL_REPLY)


def test_rest_fallback_with_a_logged_in_session_sends_the_csrf_token(page, login_server):
    page.goto(f"{login_server.url}/accounts/login/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    # From now on the websocket cannot connect: the page falls back to POST /api/chat/.
    page.route_web_socket(re.compile(r"/ws/chat/"), lambda socket: socket.close(code=1011))
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    with page.expect_response(lambda r: r.url.endswith("/api/chat/")) as answer:
        send(page, "Over HTTP with a session")
    assert answer.value.status == 200, answer.value.text()
    assert answer.value.request.headers.get("x-csrftoken")
    expect(page.locator(".message-assistant .body").last).to_have_text(FULL_REPLY)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    page.goto(f"{login_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
