"""``manage.py check --deploy`` warns about the defaults that are unsafe in production."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from grace.checks import check_insecure_defaults

SAFE_KEY = "k" * 20 + "-a-long-random-production-secret-value-0123456789"


def ids() -> set[str]:
    return {warning.id for warning in check_insecure_defaults()}


@pytest.mark.sqlite_only("grace.W003 warns about SQLite as the default database")
def test_local_defaults_warn(settings):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = ["*"]
    assert ids() == {"grace.W001", "grace.W002", "grace.W003", "grace.W004"}


def test_production_settings_do_not_warn(settings, monkeypatch):
    settings.SECRET_KEY = SAFE_KEY
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["grace.example.com"]
    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.postgresql")
    assert ids() == set()


def test_check_deploy_command_reports_the_insecure_key(settings):
    out, err = io.StringIO(), io.StringIO()
    call_command("check", "--deploy", stdout=out, stderr=err)
    text = out.getvalue() + err.getvalue()
    assert "grace.W001" in text and "GRACE_SECRET_KEY" in text


def test_plain_check_does_not_report_deploy_warnings():
    out, err = io.StringIO(), io.StringIO()
    call_command("check", stdout=out, stderr=err)
    assert "grace.W001" not in out.getvalue() + err.getvalue()
