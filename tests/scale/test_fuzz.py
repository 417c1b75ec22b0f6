"""Fuzzing: schemathesis generates requests from ``/api/openapi.json`` of a real server
(valid and invalid ones, for every operation) and sends them with a valid API token
(throttles off), so the chat endpoints run their whole pipeline. At least 1,000 requests;
no 5xx; every response is the documented schema (for a documented status) or the one
error body ``{"error", "message", "details", "request_id"}`` with the request ID of the
``X-Request-ID`` header.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import response_schema_conformance

from tests.scale.support import NO_THROTTLE, api_token

pytestmark = pytest.mark.slow

REQUESTS = 1_000
EXAMPLES = 120  # per operation and mode; operations without parameters give one each
ERROR_KEYS = {"error", "message", "details", "request_id"}


def check_response(case, response: requests.Response, documented: set[str],
                   problems: list[str]) -> None:
    where = (f"{case.method} {case.formatted_path} query={case.query} "
             f"-> {response.status_code}")
    if response.status_code >= 500:
        problems.append(f"{where}: a server error for {case.body!r:.300}: {response.text[:200]}")
        return
    content_type = response.headers.get("content-type", "")
    if str(response.status_code) in documented:
        if response.status_code == 204:
            return
        if content_type.startswith("text/event-stream"):
            events = [json.loads(line[5:]) for line in response.text.splitlines()
                      if line.startswith("data:")]
            if not events or events[-1]["type"] not in ("done", "error"):
                problems.append(f"{where}: the stream did not end with done/error: "
                                f"{case.body!r} -> {response.text[-300:]!r}")
            return
        if content_type.startswith("text/plain"):  # the Prometheus exposition
            return
        try:
            case.validate_response(schemathesis.Response.from_requests(response, verify=False),
                                   checks=[response_schema_conformance])
        except Exception as exc:  # noqa: BLE001 - every failure is reported together
            problems.append(f"{where}: not the documented schema: {exc}"[:500])
        return
    try:
        body = response.json()
    except ValueError:
        problems.append(f"{where}: not JSON ({content_type}): {response.text[:200]}")
        return
    if not (isinstance(body, dict) and set(body) == ERROR_KEYS):
        problems.append(f"{where}: not the error body: {str(body)[:300]}")
    elif body["request_id"] != response.headers.get("x-request-id"):
        problems.append(f"{where}: request_id differs from X-Request-ID")


def fuzz(operation, mode, url: str, auth: dict[str, str], statuses: Counter[str],
         problems: list[str]) -> None:
    """Send up to EXAMPLES generated requests for one operation and mode."""
    documented = {str(code) for code in operation.definition.raw.get("responses", {})}
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        # Sent with requests directly: schemathesis's own call cuts event streams short.
        raw = session.request(**case.as_transport_kwargs(base_url=url, headers=auth),
                              timeout=40)
        statuses[f"{case.method} {case.path} {raw.status_code}"] += 1
        check_response(case, raw, documented, problems)

    try:
        run()
    except Exception as exc:
        # An operation without parameters has nothing invalid to generate.
        if mode != schemathesis.GenerationMode.NEGATIVE:
            raise
        print(f"{operation.label}: no negative cases ({type(exc).__name__}: {exc})"[:300])


def test_schemathesis_finds_no_5xx_and_no_undocumented_body(grace_server) -> None:
    with grace_server({**NO_THROTTLE, "GRACE_LOG_LEVEL": "WARNING"}) as server:
        token = api_token(server.env, "fuzz")
        auth = {"Authorization": f"Bearer {token}"}
        schema = schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")
        statuses: Counter[str] = Counter()
        problems: list[str] = []
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (schemathesis.GenerationMode.POSITIVE,
                         schemathesis.GenerationMode.NEGATIVE):
                fuzz(operation, mode, server.url, auth, statuses, problems)
        total = sum(statuses.values())
        print(f"\n{total} requests: {dict(sorted(statuses.items()))}")
        errors = [line for line in server.log().splitlines() if '"ERROR"' in line]
        assert not problems, "\n".join(problems[:20] + errors[:3])
        assert total >= REQUESTS
        assert not any(code.endswith(" 500") for code in statuses)
        assert any(key.startswith("POST /api/chat/ 200") for key in statuses)
        assert "Traceback" not in server.log()
