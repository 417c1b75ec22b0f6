"""Chat data: conversations and messages, API tokens, knowledge, Hunter's security rules
and events, and what the follow-up tasks record (learning records, causal events)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce

from chat.patterns import pattern_validate


class Domain(models.TextChoices):
    ALL = "all", "All"
    CORE = "core", "Core"
    KNOWLEDGE = "knowledge", "Knowledge"
    ML = "ml", "Machine learning"
    SECURITY = "security", "Security"
    TRANSCENDENCE = "transcendence", "Transcendence"


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def owned_by(self, owner: Any) -> ConversationQuerySet:
        """Conversations of ``owner`` (a ``chat.auth.Owner``): a user's, or one
        anonymous session's."""
        if owner.user_id is not None:
            return self.filter(user_id=owner.user_id)
        if owner.session_key:
            return self.filter(user__isnull=True, session_key=owner.session_key)
        return self.none()


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="conversations",
    )
    session_key = models.CharField(
        max_length=64, blank=True, default="",
        help_text="Owner of an anonymous conversation: the SHA-256 of its session key.",
    )
    title = models.CharField(max_length=200, blank=True)
    domain = models.CharField(max_length=16, choices=Domain.choices, default=Domain.ALL)
    created = models.DateTimeField()
    updated = models.DateTimeField()

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated"]
        indexes = [
            models.Index(fields=["user", "-updated"], name="chat_conv_user_updated"),
            models.Index(
                fields=["session_key", "-updated"], name="chat_conv_session_updated",
                condition=Q(user__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Role(models.TextChoices):
    USER = "user", "User"
    """What the caller sent (after Hunter's redaction)."""
    ASSISTANT = "assistant", "Assistant"
    """Grace's reply; its ``metadata`` holds backend, stages and flags."""


class MessageQuerySet(models.QuerySet["Message"]):
    def transcript(self, *, newest_first: bool = False) -> MessageQuerySet:
        """What a conversation shows, in the order its exchanges began: each user
        message followed by its current reply (the newest of its alternatives, even when
        a message was answered again after later ones)."""
        keys: list[Any] = [
            Coalesce("reply_to__created", "created"),
            Case(When(role=Role.USER, then=Value(0)), default=Value(1)),
            F("created"),
            F("id"),
        ]
        order = [key.desc() if newest_first else key.asc() for key in keys]
        return self.filter(superseded=False).order_by(*order)

    def before(self, message: Message) -> MessageQuerySet:
        """The messages of exchanges that began before ``message`` (a user message)."""
        return self.alias(exchange=Coalesce("reply_to__created", "created")).filter(
            exchange__lt=message.created
        )


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField()
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies",
        help_text="For a reply: the user message it answers. Regenerated replies are "
        "alternatives: replies to the same message.",
    )
    superseded = models.BooleanField(
        default=False,
        help_text="A reply a newer alternative replaced in the transcript (kept, browsable).",
    )

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created", "id"]
        indexes = [models.Index(fields=["conversation", "created"], name="chat_msg_conv_created")]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"


class KnowledgeEntry(models.Model):
    """A piece of knowledge the recall stage searches: by keyword (SQLite FTS5 /
    PostgreSQL FTS) and by meaning (its embedding, when it has one of the configured
    model)."""

    title = models.CharField(max_length=300)
    body = models.TextField()
    domain = models.CharField(max_length=16, choices=Domain.choices, default=Domain.ALL)
    source = models.CharField(max_length=300, blank=True, help_text="File it came from.")
    content_hash = models.CharField(max_length=64, editable=False)
    embedding = models.BinaryField(
        null=True, blank=True, editable=False,
        help_text="The vector of title and body (float32, little-endian).",
    )
    embedding_model = models.CharField(
        max_length=200, blank=True, default="", editable=False,
        help_text="The model the embedding came from (e.g. wordllama:l2_supercat_256); "
        "empty: not embedded yet.",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["source", "id"]
        verbose_name_plural = "knowledge entries"
        constraints = [
            models.UniqueConstraint(fields=["source", "content_hash"], name="chat_knowledge_unique")
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: Any, **kwargs: Any) -> None:
        digest = self.hash_content(self.title, self.body)
        if digest != self.content_hash and self.embedding_model:
            # The vector was of the old text: stale until embedded again.
            self.embedding, self.embedding_model = None, ""
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "embedding", "embedding_model"}
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "content_hash"}
        self.content_hash = digest
        super().save(*args, **kwargs)

    @staticmethod
    def hash_content(title: str, body: str) -> str:
        return hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()


class KnowledgeGap(models.Model):
    """A question the fallback could not answer: operators add knowledge for it."""

    question = models.TextField()
    question_hash = models.CharField(max_length=64, unique=True)
    domain = models.CharField(max_length=16, choices=Domain.choices, default=Domain.ALL)
    times_asked = models.PositiveIntegerField(default=1)
    first_asked = models.DateTimeField(auto_now_add=True)
    last_asked = models.DateTimeField(auto_now=True)
    last_request_id = models.CharField(max_length=64, blank=True)
    resolved = models.BooleanField(default=False)

    class Meta:
        ordering = ["resolved", "-last_asked"]

    def __str__(self) -> str:
        return self.question[:80]


class Action(models.TextChoices):
    FLAG = "flag", "Flag"
    """Record an event and add the flag ``security_alert``; the message goes on."""
    REDACT = "redact", "Redact"
    """Mask the match before anything is stored or sent to a model."""
    BLOCK = "block", "Block"
    """Answer with a refusal; nothing of the message reaches a model."""


class Severity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class RuleKind(models.TextChoices):
    SQL_INJECTION = "sql_injection", "SQL injection"
    XSS = "xss", "Cross-site scripting"
    COMMAND_INJECTION = "command_injection", "Command injection"
    PATH_TRAVERSAL = "path_traversal", "Path traversal"
    SECRET = "secret", "Secret (API key, token, private key)"
    PROMPT_INJECTION = "prompt_injection", "Prompt injection"
    OTHER = "other", "Other"


class SecurityRule(models.Model):
    """A Hunter rule: a regular expression (Python ``re`` syntax as far as RE2 has it,
    case-insensitive unless ``case_sensitive``) and what to do when it matches. Patterns
    RE2 cannot run in linear time (backreferences, lookaround) or that match an empty
    string are refused, on every save (chat/patterns.py)."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=RuleKind.choices, default=RuleKind.OTHER)
    pattern = models.TextField()
    case_sensitive = models.BooleanField(default=False)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.MEDIUM)
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.FLAG)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.clean()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        pattern_validate(self.pattern, case_sensitive=self.case_sensitive)


class SecurityEvent(models.Model):
    """A rule matched a message. The excerpt never contains a redacted secret."""

    rule = models.ForeignKey(
        SecurityRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    rule_name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=RuleKind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    action = models.CharField(max_length=16, choices=Action.choices)
    excerpt = models.CharField(max_length=200, blank=True)
    match_count = models.PositiveIntegerField(default=1)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    session_key = models.CharField(
        max_length=64, blank=True, help_text="The SHA-256 of the anonymous caller's session key."
    )
    conversation_id = models.UUIDField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.rule_name} ({self.action})"


class Sensitivity(models.TextChoices):
    GREEN = "green", "Green"
    """Nothing personal or secret was found."""
    YELLOW = "yellow", "Yellow"
    """Personal data (emails, phone numbers) or a Hunter flag: review before reuse."""
    RED = "red", "Red"
    """Secrets or card numbers were found (and redacted): never reuse."""


class LearningRecord(models.Model):
    """A message and its reply captured for learning, with personal data and secrets
    redacted."""

    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    conversation_id = models.UUIDField(null=True, blank=True)
    domain = models.CharField(max_length=16, choices=Domain.choices, default=Domain.ALL)
    text = models.TextField()
    reply = models.TextField(blank=True)
    sensitivity = models.CharField(max_length=8, choices=Sensitivity.choices)
    redactions = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.sensitivity}: {self.text[:60]}"


class CausalEvent(models.Model):
    """Links a message (the cause) to its reply (the effect), with what happened."""

    event_type = models.CharField(max_length=32)
    outcome = models.CharField(max_length=32)
    cause_message_id = models.UUIDField(null=True, blank=True)
    effect_message_id = models.UUIDField(null=True, blank=True, db_index=True)
    conversation_id = models.UUIDField(null=True, blank=True, db_index=True)
    flags = models.JSONField(default=list, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.outcome}"


class ThrottleBucket(models.Model):
    """One throttle's state for one caller (chat/throttling.py, when no Redis is set):
    the theoretical arrival time of the caller's next request (GCRA), in milliseconds
    since the epoch. A row whose time has passed is a full bucket, deleted on the way."""

    bucket = models.CharField(max_length=200, primary_key=True)
    tat = models.BigIntegerField(db_index=True)

    def __str__(self) -> str:
        return self.bucket
