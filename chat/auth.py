"""Who may chat: the core's ways in (API tokens, logged-in sessions; grace/auth.py), then,
only when ``GRACE_ALLOW_ANONYMOUS`` is on, anonymous callers: the caller is their session
(created when missing), so anonymous visitors never see each other's conversations.

Each returns an ``Owner`` (``request.auth``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.security import APIKeyCookie

from chat.conf import chat_settings
from chat.pipeline import STAGE_BY_NAME, stage_timeout
from chat.stagerun import stage_call
from grace.auth import ApiTokenAuth, Owner, SessionUserAuth

ANONYMOUS_SESSION_KEY = "grace_anonymous"


async def _in_stage_thread(func: Callable[[str], Any], raw: str) -> Any:
    """The token lookup runs in a pipeline stage thread (not a new thread per request as
    Django's thread-sensitive calls do: about 1.4 ms of CPU per request less), bounded by
    the inspect timeout. Sessions use Django's own async session API."""
    return await stage_call(func, raw, timeout=stage_timeout(STAGE_BY_NAME["inspect"]))


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
    return [ApiTokenAuth(lookup=_in_stage_thread), SessionUserAuth(), AnonymousSessionAuth()]
