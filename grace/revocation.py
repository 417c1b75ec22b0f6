"""Credentials checked for the life of a websocket, not only at its handshake.

A socket authenticated by an API token or a logged-in session (``/ws/chat/``, the staff
feed ``/ws/events/``) ``credentials_watch``es its ``Credentials`` on connect. Two ways
close it (an ``error`` frame, then close code 4401; 4403 for a feed whose user is no
longer staff):

1. **At once, in every process sharing the channel layer**: the socket joins the groups
   ``grace.user.<id>``, ``grace.token.<id>`` and ``grace.session.<hash of the key>``;
   the receivers below send ``{"type": "credentials.revoked", "reason": ...}`` to them
   after the commit of a token revoked (saved with ``revoked``, deleted, or the admin's
   bulk ``tokens_revoked``), a user deactivated, demoted from staff (``staff_only``: the
   chat socket stays) or deleted, and a session logged out. What reaches a socket is
   definitive for its credentials: it closes without asking the database again.
2. **Within ``GRACE_WS_AUTH_RECHECK_SECONDS`` however it happened** (a direct SQL
   ``UPDATE``, a password change that ends the sessions, a process the message could not
   reach): one task per event loop re-checks every watched socket of the loop that often,
   in one thread call (tokens in one query). Nothing is cached between two checks. A
   check that cannot reach the database keeps the sockets open and logs a warning: an
   outage of the database is not a revocation.

The same receivers keep the API's token cache (``grace.token_cache``) honest: they
forget the token's or the user's entries in this process at once (before the commit and
after it), and the message also goes to the group ``grace.auth.cache``, which each
process that cached a token listens to (``token_cache_listen``; a channel layer shared
between processes only: the in-memory layer reaches no other process). A change no
receiver hears of is read from the database within ``GRACE_WS_AUTH_RECHECK_SECONDS``,
when the cached entry expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user, get_user_model, user_logged_out
from django.db import connections, transaction
from django.db.models.signals import post_delete, post_init, post_save

from grace.auth import tokens_revoked
from grace.events import _loop_for_threads, events_bind_loop
from grace.models import ApiToken
from grace.ops_conf import ops_settings
from grace.token_cache import CACHE_GROUP, token_cache, token_cache_listen

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "credentials.revoked"
SEND_TIMEOUT = 2.0
MESSAGES = {
    "token_revoked": "The API token of this connection was revoked.",
    "token_unknown": "The API token of this connection is no longer valid.",
    "user_inactive": "The account of this connection was deactivated.",
    "user_deleted": "The account of this connection was deleted.",
    "staff_removed": "The account of this connection is no longer staff.",
    "logged_out": "The session of this connection was logged out or has expired.",
}


@dataclass(frozen=True)
class Credentials:
    """What a socket was authenticated with: a user, and the token or session that
    proves it (exactly one of ``token_id`` and ``session_key``)."""

    user_id: Any
    token_id: int | None = None
    session_key: str | None = None
    staff: bool = False
    """The socket needs an active staff user (the event feed)."""

    def groups(self) -> list[str]:
        found = [user_group(self.user_id)]
        if self.token_id is not None:
            found.append(token_group(self.token_id))
        if self.session_key:
            found.append(session_group(self.session_key))
        return found


@dataclass(frozen=True)
class Revoked:
    """Why a socket's credentials no longer hold."""

    reason: str
    status: int = 401

    @property
    def message(self) -> str:
        return MESSAGES.get(self.reason, "The credentials of this connection were revoked.")


def user_group(user_id: Any) -> str:
    return f"grace.user.{user_id}"


def token_group(token_id: Any) -> str:
    return f"grace.token.{token_id}"


def session_group(session_key: str) -> str:
    # The key itself never leaves the process (channel layers may log group names).
    return "grace.session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


# -- checking ------------------------------------------------------------------------


def _session_problem(creds: Credentials, users: dict[Any, Any]) -> Revoked | None:
    engine = import_module(settings.SESSION_ENGINE)
    request = SimpleNamespace(session=engine.SessionStore(creds.session_key))
    # Django's own check: the session still names this user, with the hash of their
    # current password, through a configured backend that accepts them (is_active).
    user = get_user(request)  # type: ignore[arg-type]
    if not user.is_authenticated or user.pk != creds.user_id:
        stored = users.get(creds.user_id)
        if stored is None:
            return Revoked("user_deleted")
        return Revoked("logged_out" if stored.is_active else "user_inactive")
    if creds.staff and not user.is_staff:
        return Revoked("staff_removed", status=403)
    return None


def credentials_check(watched: list[Credentials]) -> list[Revoked | None]:
    """Sync (a thread): for each credentials, None when they still hold, else why not."""
    token_ids = {c.token_id for c in watched if c.token_id is not None}
    tokens = (
        {
            row["pk"]: row
            for row in ApiToken.objects.filter(pk__in=token_ids).values(
                "pk", "revoked", "user_id", "user__is_active", "user__is_staff"
            )
        }
        if token_ids
        else {}
    )
    session_users = {c.user_id for c in watched if c.session_key}
    users = get_user_model().objects.in_bulk(session_users) if session_users else {}
    results: list[Revoked | None] = []
    for creds in watched:
        if creds.token_id is not None:
            row = tokens.get(creds.token_id)
            if row is None:
                results.append(Revoked("token_unknown"))
            elif row["revoked"] is not None:
                results.append(Revoked("token_revoked"))
            elif not row["user__is_active"]:
                results.append(Revoked("user_inactive"))
            elif creds.staff and not row["user__is_staff"]:
                results.append(Revoked("staff_removed", status=403))
            else:
                results.append(None)
        elif creds.session_key:
            results.append(_session_problem(creds, users))
        else:
            results.append(Revoked("logged_out"))
    return results


def _check_and_close(watched: list[Credentials]) -> list[Revoked | None]:
    try:
        return credentials_check(watched)
    finally:
        # A pool thread, not a request's: its connections are closed, not kept for later.
        for connection in connections.all(initialized_only=True):
            connection.close()


async def credentials_check_async(watched: list[Credentials]) -> list[Revoked | None]:
    """``credentials_check`` in a thread of its own (a hung check holds nobody else's)."""
    return await sync_to_async(_check_and_close, thread_sensitive=False)(watched)


# -- watching ------------------------------------------------------------------------

OnRevoked = Callable[[Revoked], Awaitable[None]]
_ids = itertools.count(1)


class _Watch:
    """The watched sockets of one event loop and the task that re-checks them."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[Credentials, OnRevoked]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closing: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while self.entries:
            await asyncio.sleep(ops_settings.WS_AUTH_RECHECK_SECONDS)
            snapshot = list(self.entries.items())
            if not snapshot:
                break
            try:
                results = await credentials_check_async([creds for _, (creds, _) in snapshot])
            except Exception as exc:
                logger.warning(
                    "websocket credentials re-check failed: %s: %s", type(exc).__name__, exc
                )
                continue
            for (key, (_, on_revoked)), problem in zip(snapshot, results, strict=True):
                if problem is not None and self.entries.pop(key, None) is not None:
                    # Each socket closes in its own task: one slow close holds no other.
                    closing = asyncio.create_task(_revoke(on_revoked, problem))
                    self.closing.add(closing)
                    closing.add_done_callback(self.closing.discard)


async def _revoke(on_revoked: OnRevoked, problem: Revoked) -> None:
    try:
        await on_revoked(problem)
    except Exception:
        logger.exception("closing a socket with revoked credentials failed")


_watches: dict[asyncio.AbstractEventLoop, _Watch] = {}


def credentials_watch(creds: Credentials, on_revoked: OnRevoked) -> int:
    """Re-check ``creds`` every ``GRACE_WS_AUTH_RECHECK_SECONDS`` on this loop and await
    ``on_revoked(problem)`` (once) when they fail; returns the handle to unwatch with.
    Also binds this loop for messages sent from threads (``credentials_revoked_send``)."""
    loop = asyncio.get_running_loop()
    events_bind_loop()
    for stale in [other for other in _watches if other.is_closed()]:
        del _watches[stale]
    watch = _watches.setdefault(loop, _Watch())
    key = next(_ids)
    watch.entries[key] = (creds, on_revoked)
    if watch.task is None or watch.task.done():
        watch.task = loop.create_task(watch.run(), name="grace-credentials-watch")
    return key


def credentials_unwatch(key: int) -> None:
    for watch in _watches.values():
        watch.entries.pop(key, None)


# -- telling every process -----------------------------------------------------------


def revoked_message(
    reason: str,
    *,
    staff_only: bool = False,
    tokens: Iterable[Any] = (),
    users: Iterable[Any] = (),
) -> dict[str, Any]:
    """The channel-layer message; ``tokens`` and ``users`` (ids) for the token caches."""
    return {
        "type": MESSAGE_TYPE,
        "reason": reason,
        "staff_only": staff_only,
        "tokens": [int(pk) for pk in tokens],
        "users": [str(pk) for pk in users],
    }


async def _send(groups: list[str], message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await layer.group_send(group, message)
        except Exception as exc:  # the periodic re-check still closes the socket
            logger.warning(
                "credentials message to %s not sent: %s: %s", group, type(exc).__name__, exc
            )


def credentials_revoked_send(
    groups: Iterable[str],
    reason: str,
    *,
    staff_only: bool = False,
    wait: bool = True,
    tokens: Iterable[Any] = (),
    users: Iterable[Any] = (),
) -> None:
    """Tell every socket in ``groups`` (in every process) that its credentials were
    revoked. Never raises; from a thread it waits at most ``SEND_TIMEOUT`` per group
    (a management command's process must not exit before the message left)."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        names = list(groups)
        if isinstance(layer, InMemoryChannelLayer):
            # One process: only sockets of this process can hear it.
            names = [name for name in names if layer.groups.get(name)]
        if not names:
            return
        message = revoked_message(reason, staff_only=staff_only, tokens=tokens, users=users)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            running.create_task(_send(names, message))
            return
        future = asyncio.run_coroutine_threadsafe(_send(names, message), _loop_for_threads())
        if wait:
            future.result(SEND_TIMEOUT * len(names) + 0.5)
    except Exception as exc:
        logger.warning("credentials message not sent: %s: %s", type(exc).__name__, exc)


def _after_commit(
    groups: list[str],
    reason: str,
    *,
    staff_only: bool = False,
    tokens: Iterable[Any] = (),
    users: Iterable[Any] = (),
) -> None:
    """Tell the sockets in ``groups`` and every process's token cache, after the commit.
    This process's cache forgets ``tokens`` and ``users`` now and again after the commit
    (a request between the two reads the row as it was, and may store it: the second
    ``forget`` drops it)."""
    token_ids, user_ids = list(tokens), list(users)
    cached = bool(token_ids or user_ids)
    if cached:
        token_cache.forget(token_ids=token_ids, user_ids=user_ids)
        groups = [*groups, CACHE_GROUP]

    def send() -> None:
        if cached:
            token_cache.forget(token_ids=token_ids, user_ids=user_ids)
        credentials_revoked_send(
            groups, reason, staff_only=staff_only, tokens=token_ids, users=user_ids
        )

    transaction.on_commit(send, robust=True)


# -- receivers -----------------------------------------------------------------------


def _token_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if instance.revoked is not None and (
        created or instance.__dict__.get("_grace_revoked_was") is None
    ):
        _after_commit([token_group(instance.pk)], "token_revoked", tokens=[instance.pk])
    elif not created:
        token_cache.forget(token_ids=[instance.pk])  # its user may have changed
    instance._grace_revoked_was = instance.revoked


def _token_loaded(sender: Any, instance: Any, **kwargs: Any) -> None:
    instance._grace_revoked_was = instance.__dict__.get("revoked")


def _token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _after_commit([token_group(instance.pk)], "token_revoked", tokens=[instance.pk])


def _tokens_revoked(sender: Any, *, token_ids: Iterable[Any], **kwargs: Any) -> None:
    ids = list(token_ids)
    _after_commit([token_group(token_id) for token_id in ids], "token_revoked", tokens=ids)


def _user_loaded(sender: Any, instance: Any, **kwargs: Any) -> None:
    state = instance.__dict__
    instance._grace_credentials_was = (state.get("is_active"), state.get("is_staff"))


def _user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    was_active, was_staff = getattr(instance, "_grace_credentials_was", (None, None))
    state = instance.__dict__
    instance._grace_credentials_was = (state.get("is_active"), state.get("is_staff"))
    if created:
        return
    if was_active is not False and state.get("is_active") is False:
        _after_commit([user_group(instance.pk)], "user_inactive", users=[instance.pk])
    elif was_staff is not False and state.get("is_staff") is False:
        _after_commit(
            [user_group(instance.pk)], "staff_removed", staff_only=True, users=[instance.pk]
        )
    else:
        # Not a revocation, but what a token's request sees of its user (its name, a new
        # staff flag) is read again.
        token_cache.forget(user_ids=[instance.pk])


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _after_commit([user_group(instance.pk)], "user_deleted", users=[instance.pk])


def _logged_out(sender: Any, request: Any = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if key:
        # Sent now: logout() flushes the session right after this signal.
        _after_commit([session_group(key)], "logged_out")


def revocation_connect() -> None:
    """Connect the receivers (idempotent: each has a ``dispatch_uid``)."""
    user_model = get_user_model()
    post_init.connect(_token_loaded, sender=ApiToken, dispatch_uid="grace.revocation.token.init")
    post_save.connect(_token_saved, sender=ApiToken, dispatch_uid="grace.revocation.token.save")
    post_delete.connect(_token_deleted, sender=ApiToken, dispatch_uid="grace.revocation.token.del")
    tokens_revoked.connect(_tokens_revoked, dispatch_uid="grace.revocation.tokens")
    post_init.connect(_user_loaded, sender=user_model, dispatch_uid="grace.revocation.user.init")
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="grace.revocation.user.save")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="grace.revocation.user.del")
    user_logged_out.connect(_logged_out, dispatch_uid="grace.revocation.logout")
    token_cache.listen = token_cache_listen
