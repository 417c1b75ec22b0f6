from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from chat.models import (
    CausalEvent,
    Conversation,
    KnowledgeEntry,
    KnowledgeGap,
    LearningRecord,
    Message,
    SecurityEvent,
    SecurityRule,
)
from grace.admin import ReadOnlyAdmin
from grace.observers import actor_of


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("created", "role", "content", "request_id")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AnonymousSessionMixin:
    """Shows an anonymous owner as the audit log names them (``anonymous:`` and the first
    16 hex digits of the session key's SHA-256), never a key that works as a cookie (the
    tables hold only the SHA-256 anyway)."""

    @admin.display(description="anonymous session (SHA-256, as in the audit log)")
    def anonymous_session(self, obj: Conversation | SecurityEvent) -> str:
        return actor_of(session_key=obj.session_key) if obj.session_key else "-"


@admin.register(Conversation)
class ConversationAdmin(AnonymousSessionMixin, admin.ModelAdmin):
    list_display = ("title", "user", "domain", "created", "updated")
    list_filter = ("domain", "updated")
    search_fields = ("=id", "title", "user__username")
    fields = ("id", "user", "anonymous_session", "title", "domain", "created", "updated")
    readonly_fields = ("id", "user", "anonymous_session", "domain", "created", "updated")
    inlines = [MessageInline]
    date_hierarchy = "updated"


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("created", "role", "short", "conversation", "request_id")
    list_filter = ("role", "created")
    search_fields = ("=request_id", "=conversation__id", "content")
    readonly_fields = [f.name for f in Message._meta.fields]

    @admin.display(description="content")
    def short(self, obj: Message) -> str:
        return obj.content[:80]


@admin.register(KnowledgeEntry)
class KnowledgeEntryAdmin(admin.ModelAdmin):
    list_display = ("title", "domain", "source", "embedding_model", "updated")
    list_filter = ("domain", "embedding_model", "source")
    search_fields = ("title", "body")
    readonly_fields = ("content_hash", "embedding_model", "created", "updated")
    actions = ["reembed"]

    def save_model(
        self, request: HttpRequest, obj: KnowledgeEntry, form: Any, change: bool
    ) -> None:
        """A new or edited entry is embedded at once (until then search finds it by
        keywords only)."""
        from chat.ingest import knowledge_embed, knowledge_stale

        super().save_model(request, obj, form, change)
        knowledge_embed(entries=knowledge_stale().filter(pk=obj.pk))

    @admin.action(description="Embed again with the configured model (GRACE_EMBEDDINGS)")
    def reembed(self, request: HttpRequest, queryset: QuerySet[KnowledgeEntry]) -> None:
        from chat.ingest import knowledge_embed

        report = knowledge_embed(entries=queryset)
        if report.error:
            self.message_user(
                request, f"Embedded {report.embedded}; {report.remaining} failed: {report.error}",
                level="error",
            )
        else:
            self.message_user(request, f"Embedded {report.embedded} entries with {report.model}.")


@admin.register(KnowledgeGap)
class KnowledgeGapAdmin(admin.ModelAdmin):
    list_display = ("question", "domain", "times_asked", "last_asked", "resolved")
    list_filter = ("resolved", "domain")
    search_fields = ("question",)
    readonly_fields = ("question", "question_hash", "domain", "times_asked", "first_asked",
                       "last_asked", "last_request_id")
    actions = ["mark_resolved"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Mark as resolved (knowledge added)")
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[KnowledgeGap]) -> None:
        self.message_user(request, f"Resolved {queryset.update(resolved=True)} gap(s).")


@admin.register(SecurityRule)
class SecurityRuleAdmin(admin.ModelAdmin):
    """Patterns are checked on save (model ``clean``): an invalid one is refused."""

    list_display = ("name", "kind", "action", "severity", "enabled", "updated")
    list_filter = ("kind", "action", "severity", "enabled")
    list_editable = ("enabled",)
    search_fields = ("name", "pattern", "description")


@admin.register(SecurityEvent)
class SecurityEventAdmin(AnonymousSessionMixin, ReadOnlyAdmin):
    list_display = ("created", "rule_name", "kind", "action", "severity", "excerpt", "request_id")
    list_filter = ("kind", "action", "severity", "created")
    search_fields = ("=request_id", "rule_name", "excerpt")
    exclude = ("session_key",)
    readonly_fields = [
        "anonymous_session" if f.name == "session_key" else f.name
        for f in SecurityEvent._meta.fields
    ]
    date_hierarchy = "created"


@admin.register(LearningRecord)
class LearningRecordAdmin(ReadOnlyAdmin):
    list_display = ("created", "sensitivity", "domain", "short", "request_id")
    list_filter = ("sensitivity", "domain")
    search_fields = ("=request_id", "text")
    readonly_fields = [f.name for f in LearningRecord._meta.fields]

    @admin.display(description="text")
    def short(self, obj: LearningRecord) -> str:
        return obj.text[:80]


@admin.register(CausalEvent)
class CausalEventAdmin(ReadOnlyAdmin):
    list_display = ("created", "event_type", "outcome", "conversation_id", "request_id")
    list_filter = ("event_type", "outcome")
    search_fields = ("=request_id", "=conversation_id")
    readonly_fields = [f.name for f in CausalEvent._meta.fields]
