"""The API's token cache: active tokens this process found in the database, so that a busy
client costs no thread hop and no query per request (grace/auth.py), and the listener that
lets other processes' revocations reach it.

grace/revocation.py's receivers call ``token_cache.forget`` for every revocation they
hear of, in this process, and send the ids to ``CACHE_GROUP``, which each process that
cached a token listens to (``token_cache_listen``: on a channel layer shared between
processes; the in-memory layer reaches no other process). A change nobody hears of (a
direct SQL ``UPDATE``) is read from the database within ``GRACE_WS_AUTH_RECHECK_SECONDS``,
when the cached entry expires (docs/security.md).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer

from grace.models import ApiToken
from grace.ops_conf import ops_settings

logger = logging.getLogger(__name__)

CACHE_GROUP = "grace.auth.cache"
"""Every process that cached an API token listens here for other processes' revocations."""
CACHE_GROUP_REFRESH = 3600.0
"""Seconds between two ``group_add`` of a listener (channels-redis forgets a group member
after its ``group_expiry``, a day by default)."""


@dataclass(frozen=True)
class _Cached:
    token_id: int
    user_id: Any
    user: Any
    checked: float
    """``time.monotonic()`` of the database read that found the token active."""


class TokenCache:
    """Active tokens this process found in the database, by SHA-256, each trusted for at
    most ``GRACE_WS_AUTH_RECHECK_SECONDS`` after its read (then read again: a change the
    process never heard of, a direct SQL ``UPDATE``, holds within that bound).

    ``forget`` drops a token's or a user's entries at once; grace/revocation.py calls it
    for every revocation it hears of, in this process (before and after the commit) and
    from the channel layer (other processes). A read that began before a ``forget`` is
    not stored (``generation``): it may have seen the state before the revocation.
    Unknown and revoked tokens are never stored."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self.generation = 0
        self.listen: Callable[[], None] | None = None
        """Called (on the event loop) when an entry is stored: grace/revocation.py starts
        this process's listener for other processes' revocations."""

    def get(self, raw: str) -> _Cached | None:
        key = ApiToken.hash_key(raw)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry.checked >= ops_settings.WS_AUTH_RECHECK_SECONDS:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        return entry

    def put(self, raw: str, token: ApiToken, *, generation: int, checked: float) -> None:
        entry = _Cached(
            token_id=token.pk, user_id=token.user_id, user=copy.copy(token.user), checked=checked
        )
        with self._lock:
            if generation != self.generation:
                return  # a revocation happened while the token was being read
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[ApiToken.hash_key(raw)] = entry
        if self.listen is not None:
            self.listen()

    def forget(self, *, token_ids: Any = (), user_ids: Any = ()) -> None:
        tokens = {int(pk) for pk in token_ids if pk is not None}
        users = {str(pk) for pk in user_ids if pk is not None}
        with self._lock:
            self.generation += 1
            for key in [
                key
                for key, entry in self._entries.items()
                if entry.token_id in tokens or str(entry.user_id) in users
            ]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


token_cache = TokenCache()


# -- other processes' revocations, for the token cache ------------------------------

_listener: Any = None
"""The listener's future, on its own event loop in a daemon thread (never a request's or
a test's loop: it lives as long as the process)."""
_listener_lock = threading.Lock()


def token_cache_listen() -> None:
    """Make sure this process listens to ``CACHE_GROUP`` (on a channel layer other
    processes share); called by the token cache when it stores an entry."""
    global _listener
    if _listener is not None and not _listener.done():
        return
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return  # one process: its own receivers forget at once
    with _listener_lock:
        if _listener is not None and not _listener.done():
            return
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="grace-token-cache", daemon=True).start()
        # A layer object of its own: channels-redis lets one event loop receive per object.
        own = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        _listener = asyncio.run_coroutine_threadsafe(_listen(own), loop)


def token_cache_message(message: dict[str, Any]) -> None:
    """A revocation from the channel layer: forget what it names."""
    tokens = message.get("tokens") or ()
    users = message.get("users") or ()
    if tokens or users:
        token_cache.forget(token_ids=tokens, user_ids=users)


async def _listen(layer: Any) -> None:
    channel: str | None = None
    receiving: asyncio.Future[Any] | None = None
    refreshed: float | None = None
    try:
        while True:
            try:
                if channel is None:
                    channel = await layer.new_channel("grace-auth-cache")
                if refreshed is None or time.monotonic() - refreshed >= CACHE_GROUP_REFRESH:
                    await layer.group_add(CACHE_GROUP, channel)
                    refreshed = time.monotonic()
                if receiving is None:
                    receiving = asyncio.ensure_future(layer.receive(channel))
                done, _ = await asyncio.wait({receiving}, timeout=CACHE_GROUP_REFRESH)
                if receiving in done:
                    message, receiving = receiving.result(), None
                    token_cache_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the re-check bound still holds meanwhile
                logger.warning(
                    "token cache listener: %s: %s; retrying", type(exc).__name__, exc
                )
                receiving, refreshed = None, None
                await asyncio.sleep(1.0)
    finally:
        if receiving is not None:
            receiving.cancel()
