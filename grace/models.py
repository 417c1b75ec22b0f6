from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone


class ErrorLog(models.Model):
    """An unhandled exception: what the client saw as a 500, with the full story.

    Repeats are one row: the same ``fingerprint`` (exception class, the line that raised
    it, the route) adds to ``count`` and moves ``last_seen``; the request fields, message
    and traceback are the newest occurrence's, ``created`` is the first's. Rows written
    before coalescing (and rows made by hand) have no fingerprint.
    """

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
    created = models.DateTimeField("first seen", auto_now_add=True, db_index=True)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    count = models.PositiveIntegerField(default=1)
    fingerprint = models.CharField(max_length=64, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-last_seen", "-id"]
        verbose_name = "error log entry"
        verbose_name_plural = "error log"

    def __str__(self) -> str:
        return f"{self.status} {self.method} {self.path} ({self.exception_class})"


class AuditEntry(models.Model):
    """One link of the append-only audit chain (grace/audit.py appends, verifies).

    ``entry_hash`` is the HMAC-SHA256, with the audit key named by ``key_id``, of the
    fields and ``previous_hash`` (rows written before the keyed chain: a plain SHA-256,
    ``key_id`` empty), so changing, removing or inserting a row breaks the chain at that
    row, and re-hashing it needs the key (``manage.py verify_audit_log``). The database
    itself refuses UPDATE and DELETE (triggers made by the migration). ``managed =
    False``: the migration creates the table with its triggers, and ``flush`` (tests,
    ``manage.py flush``) never tries to empty it.
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
    key_id = models.CharField(max_length=16, blank=True, default="", editable=False)

    class Meta:
        managed = False
        db_table = "grace_auditentry"
        ordering = ["-sequence"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.resource}"


class ApiToken(models.Model):
    """A bearer token for programs. Only its SHA-256 is stored; the token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="The start of the token, to tell it apart.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True, help_text="Set to revoke the token.")

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @staticmethod
    def hash_key(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()
