"""Environment readers: a bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from grace.env import env_bool, env_float, env_int, env_list, env_str
from tests.servers import ROOT, project_env


def test_defaults_when_unset(monkeypatch):
    monkeypatch.delenv("GRACE_T", raising=False)
    assert env_str("GRACE_T", "d") == "d"
    assert env_bool("GRACE_T", True) is True
    assert env_int("GRACE_T", 7) == 7
    assert env_float("GRACE_T", 1.5) == 1.5
    assert env_list("GRACE_T", ["a"]) == ["a"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("off", False)],
)
def test_bool_values(monkeypatch, raw, expected):
    monkeypatch.setenv("GRACE_T", raw)
    assert env_bool("GRACE_T", not expected) is expected


def test_values_are_parsed(monkeypatch):
    monkeypatch.setenv("GRACE_T", " 42 ")
    assert env_int("GRACE_T", 0) == 42
    monkeypatch.setenv("GRACE_T", "2.5")
    assert env_float("GRACE_T", 0.0) == 2.5
    monkeypatch.setenv("GRACE_T", "a.example, b.example,,")
    assert env_list("GRACE_T", []) == ["a.example", "b.example"]


@pytest.mark.parametrize(
    ("reader", "raw", "fragment"),
    [
        (lambda: env_int("GRACE_T", 1), "abc", "is not an integer"),
        (lambda: env_int("GRACE_T", 1, minimum=0), "-5", "must be at least 0"),
        (lambda: env_float("GRACE_T", 1.0), "fast", "is not a number"),
        (lambda: env_float("GRACE_T", 1.0, minimum=0.1), "0", "must be at least 0.1"),
        (lambda: env_bool("GRACE_T", False), "maybe", "is not a boolean"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, reader, raw, fragment):
    monkeypatch.setenv("GRACE_T", raw)
    with pytest.raises(ImproperlyConfigured) as info:
        reader()
    assert "GRACE_T" in str(info.value) and repr(raw) in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRACE_SQLITE_BUSY_TIMEOUT_MS", "abc"),
        ("GRACE_DEBUG", "perhaps"),
        ("GRACE_MAX_BODY_BYTES", "10"),
        ("GRACE_LOG_LEVEL", "LOUD"),
        ("DATABASE_URL", "nosuchdb://user:hunter2@host/db"),
        ("GRACE_METRICS_DATABASE_URL", "postgres://u:hunter2@h:port/db"),
    ],
)
def test_manage_check_with_a_bad_value_exits_naming_it(tmp_path, name, value):
    env = project_env(tmp_path, {name: value})
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr
    assert "hunter2" not in result.stderr  # a database password is never printed
