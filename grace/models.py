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


class AuditEntry(models.Model):
    """One link of the append-only audit chain (grace/audit.py appends, verifies).

    ``entry_hash`` is the SHA-256 of the fields and ``previous_hash``, so changing,
    removing or inserting a row breaks the chain at that row (``manage.py
    verify_audit_log``). The database itself refuses UPDATE and DELETE (triggers made by
    the migration). ``managed = False``: the migration creates the table with its
    triggers, and ``flush`` (tests, ``manage.py flush``) never tries to empty it.
    """

    sequence = models.BigIntegerField(primary_key=True, editable=False)
    created = models.DateTimeField(editable=False, db_index=True)
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    resource = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    previous_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        managed = False
        db_table = "grace_auditentry"
        ordering = ["-sequence"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.resource}"
