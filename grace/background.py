"""Where the background writers (audit log, metrics) may write.

A process that runs tests writes only to test databases: a database the run did not set
up, or any database after the run, still names the real one.
"""

from __future__ import annotations

from typing import Any

from django.core import mail
from django.db import connections

_test_process = False


def test_process_note() -> None:
    """Remember that this process runs tests (Django's test environment is set up)."""
    global _test_process
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
    test_process_note()
    if not _test_process:
        return True
    return _is_test_database(connections[alias].settings_dict)
