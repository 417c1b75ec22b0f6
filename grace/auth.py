"""API tokens and the ways in that every API shares.

1. ``Authorization: Bearer <token>``: an ``ApiToken`` (stored as its SHA-256). A bearer
   header with a token that is unknown or revoked is a 401 at once: it never falls
   through to the session or to another way in. A token found active is remembered by
   the process (``token_cache``) for at most ``GRACE_WS_AUTH_RECHECK_SECONDS``, so that
   a busy client costs no thread hop and no query per request; every revocation that
   grace/revocation.py hears of forgets it at once (docs/security.md).
2. A logged-in Django session, with ninja's CSRF check.

Each returns an ``Owner`` (``request.auth``). Apps add their own ways in (the chat app's
anonymous sessions) after these.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.dispatch import Signal
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from grace.api import ApiError
from grace.models import ApiToken
from grace.token_cache import token_cache

TOKEN_PREFIX = "grc_"  # noqa: S105 - the visible start of every token, not a secret
LAST_USED_EVERY = timedelta(minutes=1)
LOOKUP_TIMEOUT = 2.0
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

tokens_revoked = Signal()
"""Sent with ``user`` (who revoked) and ``token_ids`` when tokens are revoked in bulk
(an ``update``, which sends no ``post_save``)."""

LookupCall = Callable[[Callable[[str], Any], str], Awaitable[Any]]


def session_key_hash(session_key: str) -> str:
    """The SHA-256 (64 hex digits) of a session key: what Grace stores and filters by in
    place of the key, which is a live login cookie. Idempotent: a value that already is a
    SHA-256 hex digest is returned as it is (Django's session keys are 32 characters of
    ``[a-z0-9]``, never 64 hex digits). No secret key is needed: a session key has about
    165 random bits, so a stored hash cannot be matched against guesses."""
    if not session_key or SHA256_HEX.fullmatch(session_key):
        return session_key
    return hashlib.sha256(session_key.encode()).hexdigest()


@dataclass(frozen=True)
class Owner:
    """A caller: a user (``user_id``) or an anonymous session (``session_key``).

    ``session_key`` holds the session key's SHA-256 (``session_key_hash``), made at
    construction: every row stored or filtered by an owner gets the hash, never the
    cookie."""

    user_id: int | None = None
    session_key: str = ""
    via: str = "anonymous"
    """``token``, ``session`` or ``anonymous``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "session_key", session_key_hash(self.session_key))

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
    """The user of the active token ``raw``, or None (sync; used by websockets)."""
    token = api_token_lookup(raw)
    return token.user if token is not None else None


def _lookup_and_close(raw: str) -> ApiToken | None:
    try:
        return api_token_lookup(raw)
    finally:
        close_old_connections()


async def _lookup_in_thread(func: Callable[[str], Any], raw: str) -> Any:
    """The default lookup: a thread of the loop's pool, its connection closed after."""
    async with asyncio.timeout(LOOKUP_TIMEOUT):
        return await sync_to_async(_lookup_and_close, thread_sensitive=False)(raw)


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer <token>``.

    ``lookup`` runs the (sync) token lookup off the loop and raises ``TimeoutError`` when
    it takes too long (a hung database: 503, not a hung request); an app with its own
    bounded threads passes its own. A token in ``token_cache`` needs no lookup.
    """

    def __init__(self, *, lookup: LookupCall | None = None) -> None:
        super().__init__()
        self.lookup = lookup or _lookup_in_thread

    async def authenticate(self, request: HttpRequest, token: str) -> Owner | None:
        raw = token.strip()
        cached = token_cache.get(raw)
        if cached is not None:
            # Each request its own copy: nothing a view sets on it reaches another request.
            request.user = copy.copy(cached.user)
            return Owner(user_id=cached.user_id, via="token")
        generation = token_cache.generation
        checked = time.monotonic()
        try:
            found = await self.lookup(api_token_lookup, raw)
        except TimeoutError:
            raise ApiError(
                "Your credentials could not be checked in time; try again shortly.",
                status=503, headers={"Retry-After": "5"},
            ) from None
        if found is None:
            # A wrong token is an error, not "try the next way in".
            raise ApiError(
                "The API token is not valid or has been revoked.",
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="grace", error="invalid_token"'},
            )
        token_cache.put(raw, found, generation=generation, checked=checked)
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
