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
