"""The websocket's and the page's view of the chat API: its input rules and its pipeline.

A thin adapter over ``chat.schemas`` and ``chat.pipeline`` (the chat API's modules),
so the consumer and the page apply exactly the rules and messages of ``POST /api/chat/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from grace.api import validation_details

# The contract in DESIGN.md; the schema's own values win when it states them.
DEFAULT_MAX_CHARS = 4000
DEFAULT_DOMAINS = ["all", "core", "knowledge", "ml", "security", "transcendence"]
MESSAGE_FIELDS = ("message", "domain", "conversation_id")


def _schema() -> Any:
    from chat.schemas import ChatIn

    return ChatIn


def _json_property(name: str) -> dict[str, Any]:
    schema = _schema().model_json_schema()
    prop: dict[str, Any] = dict(schema.get("properties", {}).get(name, {}))
    ref = prop.get("$ref") or next(
        (part.get("$ref") for part in prop.get("allOf", []) + prop.get("anyOf", [])), None
    )
    if ref:
        prop.update(schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {}))
    return prop


def chat_max_chars() -> int:
    return int(_json_property("message").get("maxLength", DEFAULT_MAX_CHARS))


def chat_domains() -> list[str]:
    return [str(value) for value in _json_property("domain").get("enum", DEFAULT_DOMAINS)]


def chat_input_validate(content: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Validate a ``message`` frame with the REST schema: ``(ChatIn, [])`` or
    ``(None, details)`` with the details the API's 422 body would carry."""
    fields = {key: value for key, value in content.items() if key != "type"}
    try:
        return _schema().model_validate(fields), []
    except ValidationError as exc:
        return None, validation_details([dict(error) for error in exc.errors()])


def chat_validation_messages() -> dict[str, str]:
    """The API's own messages for an empty, a blank and an over-long message."""
    samples = {"empty": "", "blank": "   ", "too_long": "x" * (chat_max_chars() + 1)}
    messages = {}
    for kind, sample in samples.items():
        _, details = chat_input_validate({"message": sample})
        found = next((d for d in details if d.get("field") == "message"), None)
        messages[kind] = str(found["message"]) if found else "This message is not valid."
    return messages


class ExchangeRefused(Exception):
    """The chat API refused the exchange (unknown conversation, throttled, ...)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error: str | None = None,
        details: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error
        self.details = details or []


async def chat_exchange(
    *,
    data: Any,
    scope: dict[str, Any],
    on_start: Callable[[str | None], Awaitable[None]],
    on_token: Callable[[str], Awaitable[None]],
) -> dict[str, Any]:
    """Run one exchange through the chat pipeline; return the REST 200 body."""
    raise ExchangeRefused("The chat pipeline is not available yet.", status=503)
