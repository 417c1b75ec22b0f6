"""Per-app settings dicts (grace/conf.py): readers, the grace.E010 check, the reference."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from chat.conf import chat_settings
from executor.conf import executor_settings
from grace.checks import check_settings_problems
from grace.conf import settings_reference, settings_specs
from grace.ops_conf import ops_settings

ROOT = Path(__file__).resolve().parents[2]


def test_readers_read_the_dicts_at_use(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True, "PIPELINE_DEADLINE": 99}
    settings.GRACE = {**settings.GRACE, "MAX_BODY_BYTES": 2048}
    settings.EXECUTOR = {**settings.EXECUTOR, "BATCH": 7}
    assert chat_settings.ALLOW_ANONYMOUS is True
    assert chat_settings.DEADLINE == 30.0  # clamped however it was set
    assert ops_settings.MAX_BODY_BYTES == 2048
    assert executor_settings.BATCH == 7


def test_a_missing_dict_or_key_reads_the_default(settings):
    del settings.GRACE_CHAT
    settings.EXECUTOR = {}
    assert chat_settings.THROTTLE_USER == "120/min"
    assert chat_settings.STAGE_TIMEOUTS == {}
    assert executor_settings.HEALTH_QUEUE_MAX_AGE == 300.0
    with pytest.raises(AttributeError):
        chat_settings.NO_SUCH_SETTING  # noqa: B018


def test_a_settings_problem_is_the_check_error_grace_e010(settings):
    problem = "GRACE_THROTTLE_USER='abc' is not a rate: use a rate like '30/min'."
    settings.GRACE_SETTINGS_PROBLEMS = [problem]
    errors = check_settings_problems()
    assert [(error.id, error.msg) for error in errors] == [("grace.E010", problem)]
    with pytest.raises(SystemCheckError, match=r"grace\.E010.*GRACE_THROTTLE_USER='abc'"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_the_project_settings_have_no_problem():
    assert check_settings_problems() == []


def test_docs_settings_md_is_generated_from_the_specs():
    out = io.StringIO()
    call_command("settings_reference", stdout=out)
    assert out.getvalue() == settings_reference()
    docs = (ROOT / "docs" / "settings.md").read_text()
    assert docs == out.getvalue(), (
        "docs/settings.md differs from the settings specs: run "
        "`.venv/bin/python manage.py settings_reference > docs/settings.md`"
    )


def test_every_variable_is_in_the_reference_once():
    variables = [spec.variable for group in settings_specs() for spec in group.specs if spec.env]
    assert len(variables) == len(set(variables))
    groups = {group.setting for group in settings_specs()}
    assert {"GRACE", "GRACE_CHAT", "EXECUTOR"} <= groups
    documented = set(re.findall(r"^\| `([A-Z_<>]+)`", settings_reference(), re.MULTILINE))
    assert set(variables) == documented
    # The public configuration: every variable the README listed before the dicts.
    for name in (
        "GRACE_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "GRACE_LOG_LEVEL", "GRACE_NUM_PROXIES",
        "GRACE_TASKS_BACKEND", "GRACE_EXECUTOR_QUEUES", "GRACE_EXECUTOR_MAX_PENDING",
        "GRACE_HEALTH_QUEUE_MAX_AGE", "GRACE_LLM_URL", "GRACE_WS_CLOSE_FRAME_BYTES",
        "GRACE_MALLOC", "GRACE_TIMEOUT_<STAGE>", "GRACE_DISABLED_FEATURES",
    ):
        assert name in documented


def test_a_replaced_redis_layer_is_reported_from_the_core_dict(settings):
    from grace.features import channel_layer_fallback

    assert channel_layer_fallback() == ""
    settings.GRACE = {**settings.GRACE, "CHANNEL_LAYER_FALLBACK": "No module named 'redis'"}
    assert "REDIS_URL is set but channels_redis cannot be imported" in channel_layer_fallback()
