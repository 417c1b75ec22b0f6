"""Receivers: Hunter's rule cache follows rule changes made in this process."""

from __future__ import annotations

from typing import Any

from chat.security import rule_cache


def rules_changed(**kwargs: Any) -> None:
    rule_cache.clear()
