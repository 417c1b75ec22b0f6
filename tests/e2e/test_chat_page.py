"""The chat page in real headless Chromium against a live server (anonymous chat on)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import artifact_path
from tests.e2e.slow_backend import WORDS
from tests.timing import limit

pytestmark = [pytest.mark.slow]

FULL_REPLY = " ".join(WORDS)


def open_chat(page, server):
    page.goto(f"{server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")


def record_frames(page) -> list[dict]:
    frames: list[dict] = []

    def on_socket(socket):
        socket.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return frames


def send(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def test_a_message_streams_its_reply_token_by_token(page, chat_server):
    frames = record_frames(page)
    open_chat(page, chat_server)
    send(page, "Hello Grace, how are you?")

    expect(page.locator(".message-user").last).to_contain_text("Hello Grace, how are you?")
    reply = page.locator(".message-assistant").last
    # Part of the reply is on screen while it is still being written.
    expect(reply.locator(".body")).to_contain_text("Grace writes this reply")
    expect(reply).to_have_attribute("aria-busy", "true")
    partial = reply.locator(".body").inner_text()
    assert 0 < len(partial) < len(FULL_REPLY)

    expect(reply).not_to_have_class(re.compile("streaming"))
    expect(reply.locator(".body")).to_have_text(FULL_REPLY)
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()

    types = [frame["type"] for frame in frames]
    assert types[0] == "start" and types[-1] == "done"
    assert types.count("token") == len(WORDS)
    request_ids = {frame["request_id"] for frame in frames}
    assert len(request_ids) == 1
    done = frames[-1]
    assert done["degraded"] is False and done["response"] == FULL_REPLY
    expect(reply.locator(".meta")).to_contain_text(done["request_id"])
    # The conversation is listed and selected.
    current = page.locator("#conversation-list button[aria-current='true']")
    expect(current).to_have_count(1)
    expect(current).to_have_attribute("data-id", done["conversation_id"])

    shot = artifact_path("chat-page.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_stop_ends_the_reply_at_once_and_keeps_the_partial_reply(page, chat_server):
    frames = record_frames(page)
    open_chat(page, chat_server)
    send(page, "Tell me a long story")
    reply = page.locator(".message-assistant").last
    expect(reply.locator(".body")).to_contain_text("Grace writes")
    page.get_by_role("button", name="Stop").click()

    expect(reply).not_to_have_class(re.compile("streaming"), timeout=limit(3) * 1000)
    expect(reply.locator(".badge-stopped")).to_have_text("Stopped")
    shown = reply.locator(".body").inner_text()
    assert 0 < len(shown) < len(FULL_REPLY)
    done = next(frame for frame in frames if frame["type"] == "done")
    assert "stopped" in done["metadata"]["flags"]
    assert done["response"] == shown
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # The partial reply was stored: opening the conversation again shows it.
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator(".message")).to_have_count(0)
    page.locator(f"#conversation-list button[data-id='{done['conversation_id']}']").click()
    expect(page.locator(".message-assistant .body").last).to_have_text(shown)


def test_regenerate_replaces_the_stopped_reply_and_keeps_it_browsable(page, chat_server):
    frames = record_frames(page)
    open_chat(page, chat_server)
    send(page, "Say it twice")
    reply = page.locator(".message-assistant").last
    expect(reply.locator(".body")).to_contain_text("Grace writes")
    page.get_by_role("button", name="Stop").click()
    expect(reply.locator(".badge-stopped")).to_have_text("Stopped")
    partial = reply.locator(".body").inner_text()
    assert 0 < len(partial) < len(FULL_REPLY)

    page.get_by_role("button", name="Regenerate last reply").click()
    expect(reply.locator(".alt-position")).to_have_text("2/2")
    expect(reply.locator(".body")).to_have_text(FULL_REPLY)
    # Answered again, not asked again: one question, one reply in view.
    expect(page.locator(".message-user")).to_have_count(1)
    expect(page.locator(".message-assistant")).to_have_count(1)
    expect(reply.locator(".badge-stopped")).to_have_count(0)
    sent = [f for f in frames if f["type"] == "done"]
    assert len(sent) == 2 and sent[1]["message_id"] != sent[0]["message_id"]

    page.get_by_role("button", name="Previous answer").click()
    expect(reply.locator(".alt-position")).to_have_text("1/2")
    expect(reply.locator(".body")).to_have_text(partial)
    expect(reply.locator(".badge-stopped")).to_have_text("Stopped")
    expect(page.get_by_role("button", name="Previous answer")).to_be_disabled()
    page.get_by_role("button", name="Next answer").click()
    expect(reply.locator(".alt-position")).to_have_text("2/2")
    expect(reply.locator(".body")).to_have_text(FULL_REPLY)

    # Stored so: the reopened conversation shows the same, from the conversation API.
    page.reload()
    reply = page.locator(".message-assistant").last
    expect(reply.locator(".alt-position")).to_have_text("2/2")
    expect(page.locator(".message-user")).to_have_count(1)
    page.get_by_role("button", name="Previous answer").click()
    expect(reply.locator(".body")).to_have_text(partial)


def test_reload_reopens_the_conversation(page, chat_server):
    frames = record_frames(page)
    open_chat(page, chat_server)
    send(page, "Remember where we were")
    expect(page.locator(".message-assistant").last).not_to_have_class(re.compile("streaming"))
    conversation = next(f for f in frames if f["type"] == "done")["conversation_id"]
    assert page.url == f"{chat_server.url}/?c={conversation}"  # a link to bookmark

    page.reload()
    expect(page.locator(".message-user .body")).to_have_text(["Remember where we were"])
    expect(page.locator(".message-assistant .body")).to_have_text(FULL_REPLY)
    current = page.locator("#conversation-list button[aria-current='true']")
    expect(current).to_have_attribute("data-id", conversation)
    # The plain address reopens it too (the browser remembers it), and goes on with it.
    page.goto(f"{chat_server.url}/")
    expect(page.locator(".message-user")).to_have_count(1)
    expect(page).to_have_url(f"{chat_server.url}/?c={conversation}")
    send(page, "And one more")
    expect(page.locator(".message-assistant")).to_have_count(2)
    expect(page.locator(".message-assistant").last).not_to_have_class(re.compile("streaming"))
    assert [f["conversation_id"] for f in frames if f["type"] == "done"] == [conversation] * 2

    # New conversation forgets it; a conversation that no longer exists is a new one.
    page.get_by_role("button", name="New conversation").click()
    expect(page).to_have_url(f"{chat_server.url}/")
    gone = "00000000-0000-4000-8000-000000000000"
    page.goto(f"{chat_server.url}/?c={gone}")
    expect(page).to_have_url(f"{chat_server.url}/")
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()
    page.reload()
    expect(page.locator("#conversation-list button")).not_to_have_count(0)
    expect(page.locator(".message")).to_have_count(0)


def test_replies_join_hard_wrapped_lines_into_paragraphs(page, chat_server):
    """A knowledge answer keeps its source's line breaks: the page joins them."""
    conversation = "11111111-2222-4333-8444-555555555555"
    wrapped = (
        "The executor runs beside the\nserver and takes the follow-up\ntasks.\n\n"
        "Start it with `manage.py run_executor`;\nit stops on SIGTERM.\n"
        "- one worker\n- or many"
    )
    now = "2026-12-05T10:00:00Z"
    body = {
        "id": conversation,
        "title": "t",
        "domain": "all",
        "created": now,
        "updated": now,
        "message_count": 2,
        "limit": 200,
        "offset": 0,
        "messages": [
            {
                "id": "11111111-2222-4333-8444-000000000001",
                "role": "user",
                "content": "How do I run\nthe executor?",
                "created": now,
                "metadata": {},
            },
            {
                "id": "11111111-2222-4333-8444-000000000002",
                "role": "assistant",
                "content": wrapped,
                "created": now,
                "metadata": {"flags": []},
                "reply_to": "11111111-2222-4333-8444-000000000001",
                "alternatives": [],
            },
        ],
    }
    page.route(
        re.compile(rf"/api/chat/conversations/{conversation}"),
        lambda route: route.fulfill(status=200, json=body),
    )
    page.goto(f"{chat_server.url}/?c={conversation}")
    paragraphs = page.locator(".message-assistant .body p")
    expect(paragraphs).to_have_count(2)
    assert paragraphs.nth(0).inner_text() == (
        "The executor runs beside the server and takes the follow-up tasks."
    )
    # A list item keeps its own line; inline code still renders as code.
    assert paragraphs.nth(1).inner_text() == (
        "Start it with manage.py run_executor; it stops on SIGTERM.\n- one worker\n- or many"
    )
    expect(paragraphs.nth(1).locator("code")).to_have_text("manage.py run_executor")
    # What the person typed is shown as typed.
    assert page.locator(".message-user .body").inner_text() == "How do I run\nthe executor?"


def test_the_favicon_is_served(page, chat_server):
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    open_chat(page, chat_server)
    href = page.locator("link[rel='icon']").get_attribute("href")
    icon = page.request.get(f"{chat_server.url}{href}")
    assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"
    legacy = page.request.get(f"{chat_server.url}/favicon.ico")
    assert legacy.status == 200 and legacy.body() == icon.body()
    assert missing == []


def test_over_long_input_is_rejected_in_the_page(page, chat_server):
    open_chat(page, chat_server)
    box = page.get_by_role("textbox", name="Message")
    box.fill("x" * 4001)
    expect(page.locator("#counter")).to_have_text("4001 / 4000")
    expect(page.locator("#counter")).to_have_class(re.compile("over"))
    expect(box).to_have_attribute("aria-invalid", "true")
    api = httpx.post(f"{chat_server.url}/api/chat/", json={"message": "x" * 4001})
    api_message = api.json()["details"][0]["message"]
    expect(page.locator("#message-error")).to_have_text(api_message)
    box.press("Enter")
    expect(page.locator(".message")).to_have_count(0)  # and still none below, once one is sent
    expect(box).to_have_value("x" * 4001)
    # Back under the limit, the error goes away; Shift+Enter adds a line, Enter sends.
    box.fill("first line")
    expect(page.locator("#message-error")).to_have_text("")
    box.press("Shift+Enter")
    box.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    expect(page.locator(".message")).to_have_count(0)
    box.press("Enter")
    expect(page.locator(".message-user .body").last).to_have_text("first line\nsecond line")
    # Positive control: a message sent after the refused one shows up alone, so the
    # refused one was not merely slow to appear.
    expect(page.locator(".message-user")).to_have_count(1)


def test_blank_input_gets_the_api_message(page, chat_server):
    open_chat(page, chat_server)
    box = page.get_by_role("textbox", name="Message")
    box.fill("   ")
    box.press("Enter")
    api = httpx.post(f"{chat_server.url}/api/chat/", json={"message": "   "})
    expect(page.locator("#message-error")).to_have_text(api.json()["details"][0]["message"])
    expect(page.locator(".message")).to_have_count(0)


def test_rest_fallback_when_the_websocket_cannot_connect(page, chat_server):
    # Every websocket to /ws/chat/ is refused, as behind a proxy that drops upgrades.
    page.route_web_socket(re.compile(r"/ws/chat/"), lambda socket: socket.close(code=1011))
    page.goto(f"{chat_server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    with page.expect_response(lambda r: r.url.endswith("/api/chat/")) as answer:
        send(page, "Are you there over plain HTTP?")
    assert answer.value.status == 200
    reply = page.locator(".message-assistant").last
    expect(reply.locator(".body")).to_have_text(FULL_REPLY)
    expect(reply.locator(".meta")).to_contain_text(answer.value.json()["request_id"])


def test_the_page_reconnects_after_the_server_restarts(page, chat_server):
    open_chat(page, chat_server)
    chat_server.__exit__(None, None, None)
    try:
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#connection-text")).to_contain_text("reconnecting in")
    finally:
        chat_server.migrate_first = False
        chat_server.__enter__()
    expect(page.locator("#connection")).to_have_attribute(
        "data-state", "open", timeout=limit(30) * 1000
    )
    send(page, "Still there?")
    try:
        expect(page.locator(".message-assistant .body").last).to_have_text(FULL_REPLY)
    except AssertionError as exc:  # say what the restarted server saw
        raise AssertionError(f"{exc}\n--- server log:\n{chat_server.log()[-6000:]}") from None
