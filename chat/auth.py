"""Who is calling the chat API, and whose conversations they may see.

Three ways in, tried in order (ninja ``auth=[...]``):

1. ``Authorization: Bearer <token>``: an ``ApiToken`` (stored as its SHA-256). A bearer
   header with a token that is unknown or revoked is a 401 at once: it never falls
   through to the session or to anonymous access.
2. A logged-in Django session (the chat page), with ninja's CSRF check.
3. Anonymous, only when ``GRACE_ALLOW_ANONYMOUS`` is on: the caller is their session
   (created when missing), so anonymous visitors never see each other's conversations.

Each returns an ``Owner`` (``request.auth``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from chat.conf import chat_settings
from chat.models import ApiToken
from grace.api import ApiError

TOKEN_PREFIX = "grc_"  # noqa: S105 - the visible start of every token, not a secret
ANONYMOUS_SESSION_KEY = "grace_anonymous"
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Owner:
    """A caller: a user (``user_id``) or an anonymous session (``session_key``)."""

    user_id: int | None = None
    session_key: str = ""
    via: str = "anonymous"
    """``token``, ``session`` or ``anonymous``."""

    def __str__(self) -> str:
        # ninja's throttles and logs use str(); never the session key itself.
        if self.user_id is not None:
            return f"user:{self.user_id}"
        return "anonymous"

    @property
    def is_anonymous(self) -> bool:
        return self.user_id is None


def api_token_new() -> str:
    """A new raw token: ``grc_`` and 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def api_token_prefix(raw: str) -> str:
    return raw[: len(TOKEN_PREFIX) + 6]


def api_token_create(*, user: Any, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user``: the row and the raw token (shown once, never stored)."""
    raw = api_token_new()
    token = ApiToken.objects.create(
        user=user, name=name, prefix=api_token_prefix(raw), key_hash=ApiToken.hash_key(raw)
    )
    return token, raw


def api_token_lookup(raw: str) -> ApiToken | None:
    """The active token ``raw`` of an active user, or None (sync)."""
    if not raw or len(raw) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=ApiToken.hash_key(raw), revoked__isnull=True, user__is_active=True)
        .first()
    )
    if token is not None:
        now = timezone.now()
        if token.last_used is None or now - token.last_used > LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
    return token


def api_token_user(raw: str) -> Any:
    """The user of the active token ``raw``, or None (sync; used by the websocket)."""
    token = api_token_lookup(raw)
    return token.user if token is not None else None


async def _in_stage_thread(func: Any, *args: Any) -> Any:
    """The token lookup runs in a pipeline stage thread (not a new thread per request as
    Django's thread-sensitive calls do: about 1.4 ms of CPU per request less), bounded by
    the inspect timeout: a database that hangs gives a 503, not a hung request. Sessions
    use Django's own async session API."""
    from chat.stagerun import stage_call

    try:
        return await stage_call(func, *args, timeout=chat_settings.timeout("inspect"))
    except TimeoutError:
        raise ApiError(
            "Your credentials could not be checked in time; try again shortly.",
            status=503, headers={"Retry-After": "5"},
        ) from None


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer <token>``."""

    async def authenticate(self, request: HttpRequest, token: str) -> Owner | None:
        found = await _in_stage_thread(api_token_lookup, token.strip())
        if found is None:
            # A wrong token is an error, not "try the next way in".
            raise ApiError(
                "The API token is not valid or has been revoked.",
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="grace", error="invalid_token"'},
            )
        request.user = found.user
        return Owner(user_id=found.user_id, via="token")


class SessionUserAuth(APIKeyCookie):
    """A logged-in Django session, CSRF-checked like any cookie auth. Only a logged-in
    session is checked: anonymous sessions have nothing worth forging."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)

    def __call__(self, request: HttpRequest) -> Any:
        key = self._get_key(request)
        if key is None:
            return None
        return self.authenticate(request, key)

    async def authenticate(self, request: HttpRequest, key: str | None) -> Owner | None:
        user = await request.auser()
        if not user.is_authenticated:
            return None
        if self.csrf and not getattr(request, "_ninja_csrf_exempt", False):
            if check_csrf(request) is not None:
                raise ApiError(
                    "CSRF check failed: send the X-CSRFToken header with the csrftoken cookie.",
                    status=403,
                )
        return Owner(user_id=user.pk, via="session")


class AnonymousSessionAuth(APIKeyCookie):
    """Anonymous access scoped to the caller's session, when allowed."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)

    async def authenticate(self, request: HttpRequest, key: str | None) -> Owner | None:
        if not chat_settings.ALLOW_ANONYMOUS:
            return None
        session = request.session  # type: ignore[attr-defined]
        if not await session.aget(ANONYMOUS_SESSION_KEY):
            await session.aset(ANONYMOUS_SESSION_KEY, True)
        if session.session_key is None:
            await session.asave()
        return Owner(session_key=session.session_key or "", via="anonymous")


def chat_auth() -> list[Any]:
    """The auth list of every chat endpoint."""
    return [ApiTokenAuth(), SessionUserAuth(), AnonymousSessionAuth()]
