from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests.servers import ROOT


def test_unknown_reply_backend_alias_is_refused_by_the_system_check(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "REPLY_BACKEND": "ollama"}
    with pytest.raises(SystemCheckError, match=r"chat.E002.*GRACE_REPLY_BACKEND='ollama'"):
        call_command("check")


def test_reply_backend_class_that_cannot_be_imported_is_refused(settings):
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **settings.GRACE_CHAT["REPLY_BACKENDS"],
            "broken": {"BACKEND": "chat.backends.nowhere.Missing", "OPTIONS": {}},
        },
        "REPLY_BACKEND": "broken",
    }
    with pytest.raises(SystemCheckError, match=r"chat.E002.*could not be loaded"):
        call_command("check")


def test_a_timeout_for_a_stage_that_does_not_exist_is_refused(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "STAGE_TIMEOUTS": {"respnd": 3.0}}
    with pytest.raises(SystemCheckError, match=r"chat.E003.*GRACE_TIMEOUT_RESPND names no"):
        call_command("check")
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "STAGE_TIMEOUTS": {"respond": 3.0}}
    call_command("check")


@pytest.mark.slow
def test_a_server_with_a_bad_backend_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "GRACE_REPLY_BACKEND": "nope",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "GRACE_REPLY_BACKEND='nope'" in result.stderr
