"""schemathesis (the dev extra's) with every check against a live server is clean.

It reads ``/api/openapi.json``, sends schema-valid and schema-breaking requests to every
operation (coverage, fuzzing and stateful phases: created conversations are read back and
deleted, deleted ones must be gone), and checks each answer against the schema: no 5xx, a
documented status, the documented body, content type and headers, valid input accepted,
invalid input refused, auth not ignored, unsupported methods a 405 with ``Allow``.

Chat operations use a user's API token, ``/api/tasks/`` a staff token, ``/api/metrics``
the scrape token (tests/schemathesis.toml). A fixed seed and a bounded number of examples
per operation make the run repeatable; ``GRACE_FUZZ_EXAMPLES`` raises it for a longer run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, GraceServer, manage

pytestmark = pytest.mark.slow

CONFIG = ROOT / "tests" / "schemathesis.toml"
SCRAPE_TOKEN = "fuzz-scrape-token-0123456789"  # noqa: S105 - a test server's
EXAMPLES = os.environ.get("GRACE_FUZZ_EXAMPLES", "20")
SEED = "15"


def token_for(env: dict[str, str], *args: str) -> str:
    return manage(env, "create_api_token", *args).stdout.strip().splitlines()[-1]


def test_schemathesis_with_all_checks_is_clean(tmp_path: Path) -> None:
    env = {
        "GRACE_THROTTLE_USER": "off",
        "GRACE_THROTTLE_ANON": "off",
        "GRACE_METRICS_TOKEN": SCRAPE_TOKEN,
        "GRACE_EXECUTOR_API_TASKS": "tests.executor.tasks.noop",
        "GRACE_LOG_LEVEL": "WARNING",
    }
    with GraceServer(tmp_path, env) as server:
        user_token = token_for(server.env, "fuzz", "--create-user")
        manage(
            {**server.env, "DJANGO_SUPERUSER_PASSWORD": "fuzz-boss-password-123"},
            "createsuperuser",
            "--noinput",
            "--username",
            "boss",
            "--email",
            "boss@example.com",
        )
        staff_token = token_for(server.env, "boss")
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/api/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                EXAMPLES,
                "--seed",
                SEED,
                "--workers",
                "1",  # CPython 3.11's ast.parse is not thread-safe (hypothesis)
                "--request-timeout",
                "40",
                "--no-color",
            ],
            env={
                **os.environ,
                "GRACE_FUZZ_TOKEN": user_token,
                "GRACE_FUZZ_STAFF_TOKEN": staff_token,
                "GRACE_FUZZ_METRICS_TOKEN": SCRAPE_TOKEN,
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        log = server.log()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout, report
    # the tokens worked: no operation answered only 401/403
    assert "Authentication failed" not in run.stdout, report
    assert "Traceback" not in log, log[-3000:]
    assert '"ERROR"' not in log, log[-3000:]
