"""The chat page at ``/``: login unless anonymous chat is on, the API's own rules."""

from __future__ import annotations

import json

import pytest
from django.test import Client

pytestmark = [pytest.mark.django_db]


def _config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="grace-config" type="application/json">')
    body = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    return json.loads(body)


def test_login_is_required_unless_anonymous_chat_is_on(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"
    login = Client().get(response["Location"])
    assert login.status_code == 200
    assert b'<label for="id_username">Username</label>' in login.content


def test_a_logged_in_user_gets_the_page_with_the_api_rules(settings, django_user_model):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    client = Client()
    client.force_login(django_user_model.objects.create_user("ada", password="pw-ada-123"))
    response = client.get("/")
    assert response.status_code == 200
    assert "csrftoken" in response.cookies  # the REST fallback sends it back
    config = _config(response)
    assert config["maxChars"] == 4000
    assert config["domains"][0] == "all" and "security" in config["domains"]
    assert config["subprotocol"] == "grace.v1" and config["wsPath"] == "/ws/chat/"
    assert config["anonymous"] is False
    # The page shows exactly the API's validation messages.
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "THROTTLE_USER": "off"}
    for kind, message in (("too_long", "x" * 4001), ("blank", "   "), ("empty", "")):
        rest = client.post(
            "/api/chat/",
            {"message": message},
            content_type="application/json",
            headers={"X-CSRFToken": response.cookies["csrftoken"].value},
        )
        assert rest.status_code == 422, rest.content
        assert rest.json()["details"][0]["message"] == config["messages"][kind]
    assert config["messages"]["too_long"] == "String should have at most 4000 characters"

def test_anonymous_visitors_get_a_session_for_their_conversations(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}
    response = Client().get("/")
    assert response.status_code == 200
    assert response.cookies["sessionid"].value  # the websocket and REST share it
    assert _config(response)["anonymous"] is True
    assert b'<label for="message">Message</label>' in response.content


def test_the_script_and_stylesheet_are_served():
    client = Client()
    script = client.get("/static/chat/chat.js")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("text/javascript")
    assert b"new WebSocket" in b"".join(script.streaming_content)
    assert client.get("/static/chat/chat.css").status_code == 200
    assert client.get("/static/chat/missing.js").status_code == 404


def test_the_page_names_a_favicon_and_favicon_ico_finds_it(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}
    client = Client()
    for url in ("/", "/accounts/login/"):
        html = client.get(url).content.decode()
        assert '<link rel="icon" href="/static/chat/favicon.svg" type="image/svg+xml">' in html
    icon = client.get("/static/chat/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(icon.streaming_content)
    legacy = client.get("/favicon.ico", follow=True)
    assert legacy.redirect_chain == [("/static/chat/favicon.svg", 301)]
    assert legacy.status_code == 200
