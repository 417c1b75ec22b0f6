"""The chat page at ``/``: a template, a static script, and the same rules as the API."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from chat.auth import ANONYMOUS_SESSION_KEY
from chat.conf import chat_settings
from chat.ws_auth import SUBPROTOCOL
from chat.ws_service import chat_domains, chat_max_chars, chat_validation_messages


@lru_cache(maxsize=1)
def page_rules() -> dict[str, Any]:
    """Limits and messages the page checks before sending, taken from the API's schema."""
    return {
        "maxChars": chat_max_chars(),
        "domains": chat_domains(),
        "messages": chat_validation_messages(),
    }


@ensure_csrf_cookie
def chat_page(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated and not chat_settings.ALLOW_ANONYMOUS:
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
    if not request.user.is_authenticated and ANONYMOUS_SESSION_KEY not in request.session:
        # Anonymous conversations belong to the session: make sure it exists (and its
        # cookie is sent) before the websocket and the REST calls use it.
        request.session[ANONYMOUS_SESSION_KEY] = True
    rules = page_rules()
    config = {
        **rules,
        "wsPath": "/ws/chat/",
        "subprotocol": SUBPROTOCOL,
        "apiChat": "/api/chat/",
        "apiConversations": "/api/chat/conversations",
        "loginUrl": settings.LOGIN_URL,
        "csrfToken": get_token(request),
        "restTimeoutMs": 30000,
        "connectWaitMs": 2000,
        "reconnectBaseMs": 500,
        "reconnectMaxMs": 15000,
        "pageSize": 20,
        "historySize": 200,
        "anonymous": not request.user.is_authenticated,
    }
    return render(
        request,
        "chat/index.html",
        {
            "page_config": config,
            "max_chars": rules["maxChars"],
            "domains": rules["domains"],
        },
    )
