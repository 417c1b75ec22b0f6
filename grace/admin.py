from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from grace.models import ErrorLog


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
    list_display = ("created", "status", "method", "path", "exception_class", "request_id", "user")
    list_filter = ("status", "method", "exception_class", "created")
    search_fields = ("=request_id", "path", "exception_class", "message")
    date_hierarchy = "created"
    readonly_fields = [f.name for f in ErrorLog._meta.fields]
    list_select_related = ("user",)


from grace import admin_ops  # noqa: E402,F401 - the audit log admin and operations links
