"""The audit log in the admin (read-only: the database refuses changes anyway) and the
links to the operations pages on the admin index (grace/admin_views.py)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from grace.admin import ReadOnlyAdmin
from grace.models import AuditEntry

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
