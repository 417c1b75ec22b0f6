"""Citations and plain-language banners on the page, in headless Chromium: a reply that
quotes the knowledge base lists its sources under it (also when the conversation is opened
again), and a degraded reply says in words what happened, with the flags in a details line."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import start_server
from tests.timing import limit

pytestmark = [pytest.mark.slow]

QUESTION = "How do I run the executor worker?"


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    """The respond stage fails on every message: the fallback answers from the knowledge."""
    with start_server(tmp_path_factory.mktemp("e2e-cited"), {"GRACE_FAULTS": "respond=error"}) as s:
        yield s


@pytest.fixture(scope="module")
def late_server(tmp_path_factory):
    """The slow writer (3.4 s a reply) gets 2 s: it is cut by the deadline mid-reply."""
    env = {"GRACE_TIMEOUT_RESPOND": "2"}
    with start_server(tmp_path_factory.mktemp("e2e-late"), env) as server:
        yield server


def send(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def test_a_knowledge_answer_cites_its_sources_and_says_the_model_was_unavailable(
    page, fault_server
):
    page.goto(f"{fault_server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, QUESTION)
    reply = page.locator(".message-assistant").last
    expect(reply).not_to_have_class(re.compile("streaming"))
    sources = reply.locator(".sources")
    expect(sources).to_be_visible()
    expect(sources).to_contain_text(re.compile(r"Sources?:"))
    expect(sources.locator("li").first).to_contain_text(re.compile("executor", re.I))
    expect(sources).to_contain_text("starter:")

    banner = page.locator("#degraded")
    expect(banner).to_be_visible()
    expect(page.locator("#degraded-title")).to_have_text(
        "Answered from the knowledge base; the model is unavailable."
    )
    expect(page.locator("#degraded-parts")).to_contain_text("Flags: response_fallback")

    # Opened again from the list: the stored reply keeps its citations.
    cited = sources.locator("li").all_inner_texts()
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator(".message-assistant")).to_have_count(0)
    page.locator("button.conversation").first.click()
    again = page.locator(".message-assistant").last
    expect(again.locator(".sources li")).to_have_count(len(cited))
    assert again.locator(".sources li").all_inner_texts() == cited


def test_small_talk_has_no_citations(page, fault_server):
    page.goto(f"{fault_server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "hello")
    reply = page.locator(".message-assistant").last
    expect(reply).not_to_have_class(re.compile("streaming"))
    expect(reply.locator(".sources")).to_have_count(0)


def test_a_reply_cut_by_the_deadline_says_so_in_plain_language(page, late_server):
    page.goto(f"{late_server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    send(page, "Write something slowly")
    reply = page.locator(".message-assistant").last
    expect(reply).not_to_have_class(re.compile("streaming"), timeout=limit(15) * 1000)
    expect(page.locator("#degraded-title")).to_have_text(
        "The model ran out of time; this answer is cut short."
    )
    expect(page.locator("#degraded-parts")).to_contain_text("llm_timeout")
    expect(page.locator("#degraded-parts")).to_contain_text("response_truncated")
    # The cut reply ends at a sentence, or says with "…" that it stops there.
    text = reply.locator(".body").inner_text().strip()
    assert text.endswith((".", "…")), text
