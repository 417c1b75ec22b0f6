"""Chat settings with their defaults, read at use time so ``override_settings`` works.

grace/settings.py fills these from the environment (the "Chat" section); this module
only supplies defaults and normalises values (clamping, parsing) in one place.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat.faults import Faults, faults_parse

STAGES = ("inspect", "recall", "respond", "store", "followup")

DEFAULT_TIMEOUTS = {"inspect": 2.0, "recall": 2.0, "respond": 25.0, "store": 5.0, "followup": 2.0}
DEADLINE_MIN = 2.0
DEADLINE_MAX = 30.0


RATE = re.compile(r"\d+/\d*(s|sec|m|min|h|hour|d|day)")
RATE_OFF = {"off", "none", "0", ""}


def rate_check(name: str, raw: str) -> str:
    """A throttle rate ("30/min", "5/s", "off"); ``ImproperlyConfigured`` otherwise.
    (Imported by grace/settings.py: nothing here may need configured settings.)"""
    value = raw.strip().lower()
    if value in RATE_OFF or RATE.fullmatch(value):
        return value
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a rate: use a rate like '30/min', '5/s', '1000/day', or 'off'."
    )


def deadline_clamp(value: float) -> float:
    """The pipeline deadline is always within 2..30 seconds."""
    return min(DEADLINE_MAX, max(DEADLINE_MIN, float(value)))


class ChatSettings:
    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, name, default)

    @property
    def ALLOW_ANONYMOUS(self) -> bool:
        return bool(self._get("GRACE_ALLOW_ANONYMOUS", False))

    @property
    def THROTTLE_USER(self) -> str:
        return str(self._get("GRACE_THROTTLE_USER", "120/min"))

    @property
    def THROTTLE_ANON(self) -> str:
        return str(self._get("GRACE_THROTTLE_ANON", "30/min"))

    @property
    def DEADLINE(self) -> float:
        return deadline_clamp(self._get("GRACE_PIPELINE_DEADLINE", DEADLINE_MAX))

    def timeout(self, stage: str) -> float:
        timeouts = {**DEFAULT_TIMEOUTS, **self._get("GRACE_STAGE_TIMEOUTS", {})}
        return max(0.01, float(timeouts[stage]))

    @property
    def FAULTS(self) -> Faults:
        raw = self._get("GRACE_FAULTS", {})
        return faults_parse(raw) if isinstance(raw, str) else dict(raw)

    @property
    def FAULT_HANG_SECONDS(self) -> float:
        return float(self._get("GRACE_FAULT_HANG_SECONDS", 60.0))

    @property
    def HISTORY_MESSAGES(self) -> int:
        return int(self._get("GRACE_HISTORY_MESSAGES", 20))

    @property
    def KNOWLEDGE_RESULTS(self) -> int:
        return int(self._get("GRACE_KNOWLEDGE_RESULTS", 3))

    @property
    def HUNTER_MATCH_TIMEOUT(self) -> float:
        return float(self._get("GRACE_HUNTER_MATCH_TIMEOUT", 0.2))

    @property
    def HUNTER_CACHE_SECONDS(self) -> float:
        return float(self._get("GRACE_HUNTER_CACHE_SECONDS", 10.0))

    @property
    def STAGE_THREADS(self) -> int:
        return int(self._get("GRACE_STAGE_THREADS", 64))

    @property
    def STAGE_CONN_MAX_AGE(self) -> float:
        return float(self._get("GRACE_STAGE_CONN_MAX_AGE", 60.0))


chat_settings = ChatSettings()
