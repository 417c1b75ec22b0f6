"""Who is on a websocket: a Django session, an API token, or an allowed anonymous visitor.

Browsers are authenticated by the session cookie (``AuthMiddlewareStack`` in
grace/asgi.py fills ``scope["user"]``). Programs send an API token in one of two
places, never in the URL (URLs land in access logs):

- the header ``Authorization: Bearer <token>`` (clients that can set headers), or
- the subprotocol list: ``Sec-WebSocket-Protocol: grace.v1, grace.bearer.<token>``
  (browsers, which cannot set headers). The server answers with ``grace.v1`` and
  never echoes the token back.

A token, when sent, wins over the session; a token that does not match any active
API token is refused even if a session is present. The token or session is checked
again for the life of the socket (``ws_credentials``, grace/revocation.py).
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

from chat.conf import chat_settings
from grace.auth import api_token_lookup
from grace.revocation import Credentials

logger = logging.getLogger(__name__)

SUBPROTOCOL = "grace.v1"
BEARER_SUBPROTOCOL_PREFIX = "grace.bearer."
# scope["grace_auth"]: how the connection was authenticated.
AUTH_SESSION = "session"
AUTH_TOKEN = "token"  # noqa: S105 - a label, not a secret
AUTH_BAD_TOKEN = "bad_token"  # noqa: S105 - a label, not a secret
AUTH_ANONYMOUS = "anonymous"


def ws_token_from_scope(scope: dict[str, Any]) -> str | None:
    """The API token of a websocket handshake, from the header or the subprotocols."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    for protocol in scope.get("subprotocols", ()) or ():
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            token = protocol[len(BEARER_SUBPROTOCOL_PREFIX) :]
            if token:
                return token
    return None


def ws_subprotocol_choose(scope: dict[str, Any]) -> str | None:
    """The subprotocol to accept with: ``grace.v1`` when offered; never a token."""
    return SUBPROTOCOL if SUBPROTOCOL in (scope.get("subprotocols") or ()) else None


def token_user_lookup(raw: str) -> tuple[Any, int] | None:
    """The active user of API token ``raw`` and the token's id, or None (sync; runs in a
    DB thread).

    Uses the chat API's own token lookup so both paths accept the same tokens.
    """
    token = api_token_lookup(raw)
    if token is None or not getattr(token.user, "is_active", False):
        return None
    return token.user, token.pk


class WsTokenAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from an API token when one is sent, and
    ``scope["grace_auth"]`` to how the connection is authenticated.

    Sits inside ``AuthMiddlewareStack`` (the session user is already resolved)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        token = ws_token_from_scope(scope)
        if token is not None:
            try:
                found = await database_sync_to_async(token_user_lookup)(token)
            except Exception:
                logger.exception("websocket token lookup failed")
                found = None
            if found is None:
                scope["user"] = AnonymousUser()
                scope["grace_auth"] = AUTH_BAD_TOKEN
            else:
                scope["user"], scope["grace_token_id"] = found
                scope["grace_auth"] = AUTH_TOKEN
        else:
            user = scope.get("user")
            if user is not None and user.is_authenticated:
                scope["grace_auth"] = AUTH_SESSION
            else:
                scope["grace_auth"] = AUTH_ANONYMOUS
        return await self.inner(scope, receive, send)


def ws_auth_problem(scope: dict[str, Any]) -> str | None:
    """Why this connection may not chat, or None when it may."""
    method = scope.get("grace_auth")
    if method == AUTH_BAD_TOKEN:
        return "The API token is not valid or has been revoked."
    if method in (AUTH_SESSION, AUTH_TOKEN):
        return None
    if chat_settings.ALLOW_ANONYMOUS:
        return None
    return (
        "Authentication is required: log in, or send an API token in the "
        "'Authorization: Bearer <token>' header or as the subprotocol 'grace.bearer.<token>'."
    )


def ws_credentials(scope: dict[str, Any]) -> Credentials | None:
    """What the connection's right to chat rests on, watched for its whole life
    (grace/revocation.py); None for an anonymous visitor (nothing to revoke)."""
    method = scope.get("grace_auth")
    user = scope.get("user")
    if method == AUTH_TOKEN and user is not None:
        return Credentials(user_id=user.pk, token_id=scope.get("grace_token_id"))
    session = scope.get("session")
    if method == AUTH_SESSION and user is not None and session is not None:
        return Credentials(user_id=user.pk, session_key=session.session_key)
    return None
