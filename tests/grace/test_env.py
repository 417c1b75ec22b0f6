"""Reading the environment (grace/conf.py): a value that cannot be used keeps its default and
becomes a problem naming the variable and the value; the system check grace.E010 reports it,
so ``check``, ``migrate`` (``make run``) and ``run_executor`` stop before anything serves."""

from __future__ import annotations

import subprocess
import sys

import pytest

from grace.conf import Setting, settings_read
from tests.servers import ROOT, project_env


def read(spec: Setting, raw: str | None) -> tuple[object, list[str]]:
    values, problems = settings_read([spec], {} if raw is None else {spec.env: raw})
    return values[spec.key], problems


def test_defaults_when_unset():
    for spec in (
        Setting("GRACE_T", "T", str, "d", ""),
        Setting("GRACE_T", "T", bool, True, ""),
        Setting("GRACE_T", "T", int, 7, ""),
        Setting("GRACE_T", "T", float, 1.5, ""),
        Setting("GRACE_T", "T", list, ["a"], ""),
    ):
        assert read(spec, None) == (spec.default, [])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("off", False)],
)
def test_bool_values(raw, expected):
    assert read(Setting("GRACE_T", "T", bool, not expected, ""), raw) == (expected, [])


def test_values_are_parsed():
    assert read(Setting("GRACE_T", "T", int, 0, ""), " 42 ") == (42, [])
    assert read(Setting("GRACE_T", "T", float, 0.0, ""), "2.5") == (2.5, [])
    assert read(Setting("GRACE_T", "T", float, 7.0, ""), " ") == (7.0, [])  # blank: default
    assert read(Setting("GRACE_T", "T", list, [], ""), "a.example, b.example,,") == (
        ["a.example", "b.example"], [],
    )
    choice = Setting("GRACE_T", "T", str, "INFO", "", choices=("INFO", "DEBUG"))
    assert read(choice, "debug") == ("DEBUG", [])
    assert read(choice, "") == ("INFO", [])


def test_clamped_values_stay_within_bounds():
    spec = Setting("GRACE_T", "T", float, 30.0, "", clamp=(2.0, 30.0))
    assert read(spec, "0.5") == (2.0, [])
    assert read(spec, "99") == (30.0, [])


@pytest.mark.parametrize(
    ("spec", "raw", "fragment"),
    [
        (Setting("GRACE_T", "T", int, 1, ""), "abc", "is not an integer"),
        (Setting("GRACE_T", "T", int, 1, "", minimum=0), "-5", "must be at least 0"),
        (Setting("GRACE_T", "T", float, 1.0, ""), "fast", "is not a number"),
        (Setting("GRACE_T", "T", float, 1.0, "", minimum=0.1), "0", "must be at least 0.1"),
        (Setting("GRACE_T", "T", bool, False, ""), "maybe", "is not a boolean"),
        (Setting("GRACE_T", "T", str, "a", "", choices=("a", "b")), "c", "is not one of a, b"),
    ],
)
def test_a_bad_value_keeps_the_default_and_names_the_variable(spec, raw, fragment):
    value, problems = read(spec, raw)
    assert value == spec.default
    assert len(problems) == 1
    assert "GRACE_T" in problems[0] and repr(raw) in problems[0] and fragment in problems[0]


def test_a_family_reads_every_variable_with_its_prefix():
    spec = Setting("GRACE_TIMEOUT_", "STAGE_TIMEOUTS", float, {}, "", minimum=0.01,
                   family="STAGE")
    environ = {"GRACE_TIMEOUT_RESPOND": "10", "GRACE_TIMEOUT_STORE": "x", "GRACE_OTHER": "1"}
    values, problems = settings_read([spec], environ)
    assert values["STAGE_TIMEOUTS"] == {}  # one bad value: the whole family keeps its default
    assert problems == ["GRACE_TIMEOUT_STORE='x' is not a number."]
    values, problems = settings_read([spec], {"GRACE_TIMEOUT_RESPOND": "10"})
    assert values["STAGE_TIMEOUTS"] == {"respond": 10.0} and problems == []


def test_the_project_specs_reject_what_the_settings_rejected():
    from chat.conf import CHAT_SPECS
    from grace.ops_conf import GRACE_SPECS

    environ = {
        "GRACE_THROTTLE_USER": "abc",
        "GRACE_PIPELINE_DEADLINE": "120",
        "GRACE_MAX_BODY_BYTES": "10",
        "GRACE_SQLITE_BUSY_TIMEOUT_MS": "abc",
    }
    chat, chat_problems = settings_read(CHAT_SPECS, environ)
    core, core_problems = settings_read(GRACE_SPECS, environ)
    assert chat["THROTTLE_USER"] == "120/min" and chat["PIPELINE_DEADLINE"] == 30.0
    assert [p.split("=")[0] for p in chat_problems + core_problems] == [
        "GRACE_THROTTLE_USER", "GRACE_MAX_BODY_BYTES", "GRACE_SQLITE_BUSY_TIMEOUT_MS",
    ]
    assert "is not a rate" in chat_problems[0]


def manage(tmp_path, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *command],
        env=project_env(tmp_path, env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "name", "value"),
    [
        (["check"], "GRACE_DEBUG", "perhaps"),
        (["check"], "GRACE_LOG_LEVEL", "LOUD"),
        (["check"], "GRACE_EXECUTOR_BATCH", "many"),
        (["migrate", "--noinput"], "GRACE_THROTTLE_USER", "abc"),  # make run migrates first
        (["run_executor"], "GRACE_MAX_BODY_BYTES", "10"),
    ],
)
def test_a_bad_value_stops_the_command_with_grace_e010(tmp_path, command, name, value):
    result = manage(tmp_path, command, {name: value})
    assert result.returncode != 0
    assert "grace.E010" in result.stderr
    assert f"{name}={value!r}" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "nosuchdb://user:hunter2@host/db"),
        ("GRACE_METRICS_DATABASE_URL", "postgres://u:hunter2@h:port/db"),
    ],
)
def test_manage_check_with_a_bad_database_url_exits_naming_it(tmp_path, name, value):
    result = manage(tmp_path, ["check"], {name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr
    assert "hunter2" not in result.stderr  # a database password is never printed


@pytest.mark.slow
def test_a_server_started_without_make_run_refuses_a_bad_value(tmp_path):
    """daphne grace.asgi:application imports the ASGI module: it must not serve either."""
    code = "import grace.asgi"
    good = subprocess.run([sys.executable, "-c", code], env=project_env(tmp_path, {}),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr  # the same import works on good values
    bad = subprocess.run([sys.executable, "-c", code],
                         env=project_env(tmp_path, {"GRACE_THROTTLE_USER": "abc"}),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert "ImproperlyConfigured: GRACE_THROTTLE_USER='abc' is not a rate" in bad.stderr
