from __future__ import annotations

from django.conf import settings
from django.db import models


class ErrorLog(models.Model):
    """One unhandled exception: what the client saw as a 500, with the full story."""

    request_id = models.CharField(max_length=64, db_index=True, blank=True)
    method = models.CharField(max_length=16, blank=True)
    path = models.CharField(max_length=2048, blank=True)
    status = models.PositiveSmallIntegerField(default=500)
    exception_class = models.CharField(max_length=255, blank=True)
    message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "error log entry"
        verbose_name_plural = "error log"

    def __str__(self) -> str:
        return f"{self.status} {self.method} {self.path} ({self.exception_class})"
