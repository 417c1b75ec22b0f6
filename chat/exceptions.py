"""The chat app's exceptions."""

from __future__ import annotations


class StageVerdict(Exception):
    """Raised by a stage to end the whole request (not a failure of the stage): it
    propagates out of ``stage_run`` instead of becoming ``error``. Do not raise directly."""


class ConversationNotFound(StageVerdict):
    """The conversation does not exist or belongs to someone else (never say which).

    REST, SSE and the websocket all answer it with the same 422 body: ``MESSAGE`` and
    ``details()``.
    """

    MESSAGE = "The request did not validate; see details."

    def details(self) -> list[dict[str, str]]:
        return [
            {
                "field": "conversation_id",
                "problem": "not_found",
                "message": "No conversation of yours has this ID.",
                "input": str(self),
            }
        ]


class StageAbandoned(Exception):
    """The pipeline gave up on this stage (timed out) before it committed anything."""


class ChatRefused(StageVerdict):
    """Grace will not answer this message now, and stored nothing about it.

    REST answers it with 503 and ``Retry-After``; the websocket with an error frame of
    status 503 and ``details: [{"retry_after": n}]``. ``error`` says why: ``busy`` (past
    the stage pool's capacity), ``masking_failed`` (the secret masking could not run),
    ``inspection_failed`` (the inspection could not run and
    ``GRACE_INSPECTION_ON_FAILURE=refuse``).
    """

    def __init__(self, message: str, *, error: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.retry_after = max(1, int(retry_after))


class MessageNotFound(Exception):
    """No message with this ID in the caller's conversations (never say whose).

    REST answers 404 ``not_found``; the websocket an error frame of status 404.
    """

    MESSAGE = "No message of yours has this ID."


class NotRegenerable(Exception):
    """A message that cannot be answered again: a message blocked by a security rule
    (only a placeholder of it was kept), or a reply stored without its message.

    REST answers 422 ``validation_error`` with a ``message_id`` detail; the websocket an
    error frame of status 422.
    """

    def __init__(self, message_id: str, reason: str) -> None:
        super().__init__(message_id)
        self.reason = reason

    def details(self) -> list[dict[str, str]]:
        return [
            {
                "field": "message_id",
                "problem": "not_regenerable",
                "message": self.reason,
                "input": str(self),
            }
        ]
