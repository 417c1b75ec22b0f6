"""Security headers on every response (the 413 and errors too) and a strict CSP on every
page, whose inline scripts and styles all carry the request's nonce.

Before: no Content-Security-Policy and no Permissions-Policy anywhere; the 413/415 of
``ApiErrorMiddleware`` (above Django's SecurityMiddleware) had none of the headers;
/api/docs loaded Swagger from a CDN with an inline script.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from tests.grace.support import assert_error

JSON = "application/json"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def assert_security_headers(response) -> dict[str, str]:
    """Every header there; the CSP strict; returns the CSP's directives."""
    for name, value in HEADERS.items():
        assert response.get(name) == value, (name, response.get(name), response.status_code)
    assert "camera=()" in response["Permissions-Policy"]
    assert "microphone=()" in response["Permissions-Policy"]
    policy = response["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert "'unsafe-inline'" not in directives["style-src"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    return {name: " ".join(values) for name, values in directives.items()}


INLINE = re.compile(r"<(script|style)\b([^>]*)>(.*?)</\1>", re.S | re.I)


def assert_no_inline_without_nonce(response) -> int:
    """Each inline <script> (not a JSON data block) and <style> carries the nonce of
    the response's CSP, or its hash is in the policy; no style="" attribute. Returns
    how many inline elements the page has."""
    directives = assert_security_headers(response)
    html = response.content.decode()
    found = 0
    for tag, attrs, body in INLINE.findall(html):
        if tag.lower() == "script" and ("src=" in attrs or "application/json" in attrs):
            continue
        found += 1
        nonce = re.search(r'nonce="([^"]+)"', attrs)
        allowed = directives["script-src" if tag.lower() == "script" else "style-src"]
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert (nonce and f"'nonce-{nonce.group(1)}'" in allowed) or (
            f"'sha256-{digest}'" in allowed
        ), (tag, attrs, body[:80], allowed)
    assert not re.search(r"<[^>]+\sstyle=", html), "an inline style attribute"
    assert not re.search(r"<[^>]+\son[a-z]+=", html), "an inline event handler"
    return found


@pytest.mark.django_db
def test_chat_page(admin_client, client):
    assert_no_inline_without_nonce(client.get("/accounts/login/"))
    response = admin_client.get("/")
    assert response.status_code == 200
    assert assert_no_inline_without_nonce(response) == 0
    assert 'src="/static/chat/chat.js"' in response.content.decode()


@pytest.mark.django_db
def test_admin_login_page(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert_no_inline_without_nonce(response)


@pytest.mark.django_db
def test_api_docs_use_local_scripts_only(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn.jsdelivr.net" not in html
    assert 'src="/static/ninja/swagger-ui-init.js"' in html
    assert assert_no_inline_without_nonce(response) == 0
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/grace/errorlog/",
        "/admin/grace/auditentry/",
        "/admin/executor/taskrecord/",
        "/admin/ops/events/",
        "/admin/ops/dashboard/",
        "/admin/auth/user/add/",
    ],
)
def test_admin_pages_inline_code_carries_the_nonce(admin_client, path):
    response = admin_client.get(path)
    assert response.status_code == 200, path
    assert_no_inline_without_nonce(response)


@pytest.mark.django_db
def test_a_page_with_inline_code_names_its_nonce(admin_client):
    first = admin_client.get("/admin/ops/events/")
    second = admin_client.get("/admin/ops/events/")
    nonces = [re.search(r"'nonce-([^']+)'", r["Content-Security-Policy"]) for r in (first, second)]
    assert nonces[0] and nonces[1] and nonces[0].group(1) != nonces[1].group(1)
    assert f'<script nonce="{nonces[0].group(1)}">' in first.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/no/such/thing", "/no/such/page/"])
def test_404s(client, path):
    assert_security_headers(client.get(path))


@pytest.mark.django_db
def test_api_errors(admin_client, settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "THROTTLE_USER": "off"}
    client = admin_client
    assert_security_headers(client.get("/api/chat/conversations", HTTP_AUTHORIZATION="Bearer x"))
    bad = client.post("/api/chat/", data=b"[" * 100, content_type=JSON)
    assert_error(bad, 400)
    assert_security_headers(bad)
    too_large = client.post("/api/chat/", data=b"x" * 70000, content_type=JSON)
    assert_error(too_large, 413)
    assert_security_headers(too_large)
    not_json = client.post("/api/chat/", data=b"message=hi", content_type="text/plain")
    assert_error(not_json, 415)
    assert_security_headers(not_json)
    assert_security_headers(client.get("/api/health"))


def test_the_policy_is_a_setting(client, settings, db):
    settings.GRACE = {**settings.GRACE, "CONTENT_SECURITY_POLICY": "default-src 'none'"}
    assert client.get("/api/health")["Content-Security-Policy"] == "default-src 'none'"
    settings.GRACE = {**settings.GRACE, "CONTENT_SECURITY_POLICY": "off"}
    response = client.get("/api/health")
    assert "Content-Security-Policy" not in response
    assert response["X-Content-Type-Options"] == "nosniff"
