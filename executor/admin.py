"""The task list for operators: filters, search by task id or request ID, Retry and Cancel,
and the queue figures (READY, RUNNING, finished, oldest READY age) above the list. Retry
and Cancel are audited, one entry per task they change, with the staff user as actor."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join

from executor.models import TaskRecord
from executor.selectors import queue_figures
from executor.services import task_cancel, task_retry
from grace.observers import actor_of


def _pretty(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):
    list_display = (
        "id", "task_name", "queue_name", "priority", "status", "attempts", "enqueued_at",
        "finished_at", "request_id",
    )
    list_filter = ("status", "queue_name", "priority", "task_name")
    search_fields = ("=id", "=request_id")
    ordering = ("-sequence",)
    list_per_page = 100
    show_full_result_count = False
    actions = ("retry_tasks", "cancel_tasks")
    fieldsets = (
        (None, {"fields": (
            "id", "task_path", "status", "queue_name", "priority", "request_id",
            "cancel_requested",
        )}),
        ("Timing", {"fields": (
            "enqueued_at", "run_after", "started_at", "last_attempted_at", "finished_at",
            "timeout",
        )}),
        ("Attempts", {"fields": (
            "attempts", "max_attempts", "worker_id", "lease_expires_at", "errors_display",
        )}),
        ("Data", {"fields": ("args_display", "kwargs_display", "result_display")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [str(name) for _, group in self.fieldsets for name in group["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="args")
    def args_display(self, obj: TaskRecord) -> str:
        return _pretty(obj.args)

    @admin.display(description="kwargs")
    def kwargs_display(self, obj: TaskRecord) -> str:
        return _pretty(obj.kwargs)

    @admin.display(description="result")
    def result_display(self, obj: TaskRecord) -> str:
        return _pretty(obj.return_value)

    @admin.display(description="errors (one per failed attempt, with its traceback)")
    def errors_display(self, obj: TaskRecord) -> str:
        if not obj.errors:
            return "-"
        return format_html_join(
            "", "<p><b>attempt {}: {}</b>: {}</p><pre>{}</pre>",
            (
                (e.get("attempt"), e.get("exception_class_path"), e.get("message"),
                 e.get("traceback") or "")
                for e in obj.errors
            ),
        )

    @admin.action(description="Retry: send failed or cancelled tasks back to the queue",
                  permissions=["change"])
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        done = task_retry(task_ids=ids, actor=actor_of(user_id=request.user.pk))
        self.message_user(request, f"{done} task(s) sent back to the queue; "
                          f"{len(ids) - done} skipped (not failed or cancelled).",
                          messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Cancel: READY tasks never run, RUNNING ones are asked to stop",
                  permissions=["change"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        by_status: dict[str, int] = {}
        actor = actor_of(user_id=request.user.pk)
        for task_id in queryset.values_list("id", flat=True):
            status = task_cancel(task_id=task_id, actor=actor) or "gone"
            by_status[status] = by_status.get(status, 0) + 1
        summary = ", ".join(f"{count} {status.lower()}" for status, count in by_status.items())
        self.message_user(request, f"Cancel: {summary}.", messages.SUCCESS)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        figures = [{**row, "oldest_ready_age": _age(row["oldest_ready_age"])}
                   for row in queue_figures()]
        return super().changelist_view(
            request, {**(extra_context or {}), "queue_figures": figures}
        )
