"""Throttles of the chat API: per user (``GRACE_THROTTLE_USER``) for token and session
callers, per client IP (``GRACE_THROTTLE_ANON``) for anonymous ones.

Built on ninja's ``SimpleRateThrottle`` (Django cache, sliding window); the rate is read
at each request so settings changes apply at once, and ``off`` disables a throttle.
A throttled request is a 429 with ``Retry-After`` (seconds) through grace/api.py.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.throttling import BaseThrottle, SimpleRateThrottle

from chat.conf import chat_settings

OFF = {"", "off", "none", "0"}


class _ChatThrottle(SimpleRateThrottle):
    scope = "chat"

    def __init__(self) -> None:  # the rate is read per request, not at start-up
        self.rate = None
        self.num_requests, self.duration = None, None

    def current_rate(self) -> str:
        raise NotImplementedError

    def allow_request(self, request: HttpRequest) -> bool:
        rate = self.current_rate().strip().lower()
        if rate in OFF:
            return True
        if rate != self.rate:
            self.num_requests, self.duration = self.parse_rate(rate)
            self.rate = rate
        return super().allow_request(request)


class UserThrottle(_ChatThrottle):
    """Token and session callers, keyed by user."""

    scope = "chat_user"

    def current_rate(self) -> str:
        return chat_settings.THROTTLE_USER

    def get_cache_key(self, request: HttpRequest) -> str | None:
        owner = getattr(request, "auth", None)
        if owner is None or getattr(owner, "user_id", None) is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": owner.user_id}


class AnonThrottle(_ChatThrottle):
    """Anonymous callers, keyed by client IP (so new sessions do not reset it)."""

    scope = "chat_anon"

    def current_rate(self) -> str:
        return chat_settings.THROTTLE_ANON

    def get_cache_key(self, request: HttpRequest) -> str | None:
        owner = getattr(request, "auth", None)
        if owner is not None and getattr(owner, "user_id", None) is not None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def chat_throttles() -> list[BaseThrottle]:
    return [UserThrottle(), AnonThrottle()]

