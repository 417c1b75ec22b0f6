"""The core's admin: the error log, the audit log (read-only: the database refuses
changes anyway), API tokens, and the links to the operations pages on the admin index
(grace/admin_views.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from grace.auth import api_token_new, api_token_prefix, tokens_revoked
from grace.models import ApiToken, AuditEntry, ErrorLog


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the service: operators read them, never edit them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The table prunes itself to GRACE_ERROR_LOG_MAX_ROWS; nobody edits history.
        return False


@admin.register(ErrorLog)
class ErrorLogAdmin(ReadOnlyAdmin):
    """One row per distinct error (its fingerprint); ``count`` says how often it
    happened, ``last seen`` when last (the request fields are that occurrence's)."""

    list_display = (
        "last_seen", "count", "created", "status", "method", "path", "exception_class",
        "request_id", "user",
    )
    list_filter = ("status", "method", "exception_class", "last_seen")
    search_fields = ("=request_id", "path", "exception_class", "message")
    date_hierarchy = "last_seen"
    readonly_fields = [f.name for f in ErrorLog._meta.fields]
    list_select_related = ("user",)


admin.site.index_template = "admin/grace/index.html"


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "created", "action", "actor", "resource", "request", "short_hash")
    list_filter = ("action", "created")
    search_fields = ("=request_id", "=resource", "action", "actor")
    date_hierarchy = "created"
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    show_full_result_count = False

    @admin.display(description="request ID")
    def request(self, obj: AuditEntry) -> str:
        if not obj.request_id:
            return "-"
        url = reverse("grace-ops-request") + "?" + urlencode({"id": obj.request_id})
        return format_html('<a href="{}">{}</a>', url, obj.request_id)

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEntry) -> str:
        return obj.entry_hash[:12]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created here or with ``manage.py create_api_token``; the token itself
    is shown once, on creation. Revoke by action or by setting ``revoked``."""

    list_display = ("prefix", "name", "user", "created", "last_used", "revoked")
    list_filter = ("revoked",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "created", "last_used")
    fields = ("user", "name", "prefix", "created", "last_used", "revoked")
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        raw = api_token_new()
        obj.prefix = api_token_prefix(raw)
        obj.key_hash = ApiToken.hash_key(raw)
        super().save_model(request, obj, form, change)
        messages.warning(
            request,
            f"The new token is {raw} — copy it now: it is not stored and is not shown again.",
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = list(queryset.filter(revoked__isnull=True).values_list("pk", flat=True))
        count = queryset.filter(pk__in=revoked).update(revoked=timezone.now())
        tokens_revoked.send(sender=ApiToken, user=request.user, token_ids=revoked)
        self.message_user(request, f"Revoked {count} token(s).")
