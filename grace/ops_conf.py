"""Operations settings (audit log, event bus, metrics, feature switches) with defaults.

grace/settings.py fills these from the environment (its "Operations" section); reading
them here at use time keeps ``override_settings`` and the pytest ``settings`` fixture
working.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings



class OpsSettings:
    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, name, default)

    @property
    def AUDIT_TIMEOUT(self) -> float:
        """Seconds a waiting ``safe_log`` waits for its entry to be appended."""
        return float(self._get("GRACE_AUDIT_TIMEOUT", 2.0))

    @property
    def AUDIT_QUEUE(self) -> int:
        """Entries waiting for the writer thread; beyond it ``safe_log`` refuses."""
        return int(self._get("GRACE_AUDIT_QUEUE", 10_000))

    @property
    def EVENTS_TIMEOUT(self) -> float:
        return float(self._get("GRACE_EVENTS_TIMEOUT", 1.0))

    @property
    def METRICS_TOKEN(self) -> str:
        return str(self._get("GRACE_METRICS_TOKEN", ""))

    @property
    def METRICS_FLUSH_SECONDS(self) -> float:
        return float(self._get("GRACE_METRICS_FLUSH_SECONDS", 2.0))

    @property
    def METRICS_BUFFER(self) -> int:
        return int(self._get("GRACE_METRICS_BUFFER", 50_000))

    @property
    def METRICS_RETENTION_DAYS(self) -> float:
        return float(self._get("GRACE_METRICS_RETENTION_DAYS", 14.0))

    @property
    def METRICS_EVENTS_HOURS(self) -> float:
        return float(self._get("GRACE_METRICS_EVENTS_HOURS", 24.0))

    @property
    def HEALTH_QUEUE_MAX_AGE(self) -> float:
        return float(self._get("GRACE_HEALTH_QUEUE_MAX_AGE", 300.0))


ops_settings = OpsSettings()

_test_process = False


def test_process_note() -> None:
    """Remember that this process runs tests (Django's test environment is set up)."""
    global _test_process
    from django.core import mail

    if hasattr(mail, "outbox"):
        _test_process = True


def in_test_process() -> bool:
    return _test_process


def _is_test_database(config: dict[str, Any]) -> bool:
    name = str(config.get("NAME") or "")
    test_name = (config.get("TEST") or {}).get("NAME")
    return (test_name is not None and name == str(test_name)) or name.startswith("test_")


def database_writable(alias: str) -> bool:
    """Whether background writers may write to ``alias``: always, except in a process that
    runs tests, which writes only to test databases (a database the run did not set up,
    or any database after the run, still names the real one)."""
    from django.db import connections

    test_process_note()
    if not _test_process:
        return True
    return _is_test_database(connections[alias].settings_dict)
