"""Receivers: Hunter's rule cache follows rule changes made in this process."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from chat.models import SecurityRule
from chat.security import rule_cache


@receiver(post_save, sender=SecurityRule, dispatch_uid="chat.rules.saved")
@receiver(post_delete, sender=SecurityRule, dispatch_uid="chat.rules.deleted")
def rules_changed(**kwargs: Any) -> None:
    rule_cache.clear()
