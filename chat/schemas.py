"""The chat API's schemas. ``ChatIn`` is the one definition of a valid message, used by
REST, the websocket and the page alike.

Unknown fields are rejected (422, ``extra_forbidden``): a misspelt ``conversation_id``
would otherwise silently start a new conversation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from ninja import Schema
from pydantic import AfterValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

MAX_MESSAGE_CHARS = 4000
Domain = Literal["all", "core", "knowledge", "ml", "security", "transcendence"]


def _not_blank(value: str) -> str:
    # Python's strip() also drops \x1c-\x1f, which pydantic's strip keeps: a message of
    # only those was accepted here and refused by chat_reply (a 500, found by fuzzing).
    if not value.strip():
        raise PydanticCustomError("blank", "The message is empty or only whitespace.")
    return value


Message = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=MAX_MESSAGE_CHARS),
    AfterValidator(_not_blank),
    Field(
        description=f"1 to {MAX_MESSAGE_CHARS} characters after surrounding whitespace is "
        "stripped (characters, not bytes); not blank.",
        json_schema_extra={"minLength": 1},
    ),
]


class ChatIn(Schema):
    model_config = ConfigDict(extra="forbid")

    message: Message
    domain: Domain = "all"
    conversation_id: UUID | None = Field(
        default=None, description="Continue one of your conversations; null starts one."
    )


class SourceOut(Schema):
    title: str = Field(description="The knowledge entry's title (its heading path).")
    source: str = Field(description="Where it was ingested from (a file), or empty.")
    score: float = Field(description="How well search matched it to the message.")


class ChatMetadata(Schema):
    duration_ms: int
    backend: str
    stages: dict[str, str] = Field(
        description="inspect: ok|flagged|redacted|blocked|skipped|timeout|error; "
        "recall, respond, store, followup: ok|skipped|timeout|error."
    )
    flags: list[str]
    sources: list[SourceOut] = Field(
        default_factory=list,
        description="The knowledge entries the reply used, best first (its citations); "
        "empty when it used none.",
    )


class ChatOut(Schema):
    response: str
    domain: str
    conversation_id: str
    message_id: str
    degraded: bool = Field(description="True when any part failed or was skipped.")
    request_id: str
    metadata: ChatMetadata


# An offset past what a database integer holds was a 500 (found by fuzzing): 422 instead.
MAX_OFFSET = 1_000_000_000


class PageQuery(Schema):
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class ConversationOut(Schema):
    id: UUID
    title: str
    domain: str
    created: datetime
    updated: datetime
    message_count: int


class ConversationPage(Schema):
    items: list[ConversationOut]
    count: int
    limit: int
    offset: int


class AlternativeOut(Schema):
    id: UUID
    content: str
    created: datetime
    metadata: dict[str, Any]


class MessageOut(Schema):
    id: UUID
    role: str
    content: str
    created: datetime
    metadata: dict[str, Any]
    reply_to: UUID | None = Field(
        default=None, description="For a reply: the ID of the user message it answers."
    )
    alternatives: list[AlternativeOut] = Field(
        default_factory=list,
        description="For a reply: the earlier replies to the same message, replaced by "
        "Regenerate, oldest first; this reply is the newest (the page shows it as "
        "n/n, the alternatives as 1/n ... n-1/n). Empty otherwise.",
    )

    @staticmethod
    def resolve_reply_to(obj: Any) -> Any:
        # The column, not the related row (no query from an async view).
        return obj["reply_to"] if isinstance(obj, dict) else obj.reply_to_id


class RegenerateIn(Schema):
    model_config = ConfigDict(extra="forbid")

    domain: Domain | None = Field(
        default=None, description="Answer in this domain; null: the reply's own domain."
    )


class RegenerateFrame(RegenerateIn):
    """The websocket's ``regenerate`` frame (its ``type`` aside)."""

    message_id: UUID = Field(
        description="The message to answer again: a user message, or one of its replies."
    )
    conversation_id: UUID | None = Field(
        default=None, description="Its conversation (optional: checked when given)."
    )


class ConversationDetail(Schema):
    id: UUID
    title: str
    domain: str
    created: datetime
    updated: datetime
    message_count: int
    messages: list[MessageOut]
    limit: int
    offset: int


class MessagePageQuery(Schema):
    limit: int = Field(100, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
