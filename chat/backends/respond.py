"""The respond stage's one entry point: the primary backend, else the fallback.

First version: the primary answers unless it is unavailable or raises a
``ReplyBackendError``; then the fallback answers and flags say why. (The model issue
adds the circuit breaker and the deadline handling here.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from chat.backends import reply_backend_fallback, reply_backend_primary
from chat.backends.base import ReplyBackendError, ReplyRequest, ReplyResult, TokenCallback

logger = logging.getLogger(__name__)


@dataclass
class ReplyOutcome:
    result: ReplyResult
    flags: list[str] = field(default_factory=list)


async def reply_generate(
    *, request: ReplyRequest, on_token: TokenCallback | None = None
) -> ReplyOutcome:
    """Answer ``request``; never raises ``ReplyBackendError`` (the fallback answers)."""
    primary = reply_backend_primary()
    fallback = reply_backend_fallback()
    flags: list[str] = []
    if primary is not fallback:
        if primary.available():
            try:
                return ReplyOutcome(await primary.generate(request, on_token=on_token))
            except ReplyBackendError as exc:
                logger.warning("reply backend %s failed: %s", primary.alias, exc)
                flags += [exc.flag, "response_fallback"]
        else:
            flags.append("response_fallback")
    return ReplyOutcome(await fallback.generate(request, on_token=on_token), flags)
