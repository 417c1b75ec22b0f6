"""``/api/openapi.json`` documents every status an operation answers, each error with the
one error body (``ErrorOut``), so that a client generated from it can type its errors.

Before: every operation documented its success only (schemathesis with all checks: 15
"undocumented status code" failures); an optional body was documented as ``null``-able
though a ``null`` body is a 400.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from schemathesis.specs.openapi.definitions import OPENAPI_31

from grace.errors import error_body
from grace.ops_conf import ops_settings
from grace.schemas import ErrorOut
from tests.chat.conftest import ROOMY_TIMEOUTS, quick_chat

pytestmark = pytest.mark.django_db(transaction=True)

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
JSON = "application/json"


@pytest.fixture
def api(settings: Any) -> Iterator[Any]:
    roomy = {"PIPELINE_DEADLINE": 30.0, "STAGE_TIMEOUTS": dict(ROOMY_TIMEOUTS)}
    with quick_chat(settings, ALLOW_ANONYMOUS=False, **roomy) as configured:
        yield configured


@pytest.fixture
async def schema(api: Any) -> dict[str, Any]:
    response = await AsyncClient().get("/api/openapi.json")
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def documented(schema: dict[str, Any], method: str, path: str) -> dict[int, Any]:
    operation = schema["paths"][path][method.lower()]
    return {int(code): response for code, response in operation["responses"].items()}


async def tokens(django_user_model: Any) -> tuple[str, str]:
    from grace.auth import api_token_create

    def make() -> tuple[str, str]:
        user = django_user_model.objects.create_user("ada")
        boss = django_user_model.objects.create_user("boss", is_staff=True)
        return api_token_create(user=user)[1], api_token_create(user=boss)[1]

    return await sync_to_async(make)()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_error_out_is_the_error_body():
    body = error_body(status=422, details=[{"field": "message"}])
    assert list(ErrorOut.model_fields) == list(body)
    assert ErrorOut.model_validate({**body, "request_id": "abc"}).model_dump() == {
        **body,
        "request_id": "abc",
    }
    assert sorted(ErrorOut.model_json_schema()["required"]) == sorted(body)


async def test_the_schema_is_valid_openapi_3_1(schema):
    assert schema["openapi"].startswith("3.1.")
    jsonschema_rs.validator_for(OPENAPI_31).validate(schema)
    schemes = set(schema["components"]["securitySchemes"])
    for _, _, operation in operations(schema):
        for requirement in operation.get("security", []):
            assert set(requirement) <= schemes, requirement
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert len(ids) == len(set(ids))
    assert "chat_post" in ids and "conversation_get" in ids
    for _, _, operation in operations(schema):
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                assert link["operationId"] in ids, link


async def test_every_operation_documents_its_errors_with_the_error_body(schema):
    for method, path, operation in operations(schema):
        responses = documented(schema, method, path)
        where = f"{method} {path}"
        assert {400, 413, 500} <= set(responses), where
        for status, response in responses.items():
            if status >= 400:
                assert response["content"][JSON]["schema"] == ERROR_REF, (where, status)
                assert "Unknown" not in response["description"], (where, status)
        if operation.get("security"):
            assert 401 in responses, where
            assert responses[401]["headers"]["WWW-Authenticate"]["required"] is True
        if "requestBody" in operation:
            assert {415, 422} <= set(responses), where
        if 429 in responses:
            assert responses[429]["headers"]["Retry-After"]["required"] is True, where
        if 503 in responses:
            assert "Retry-After" in responses[503]["headers"], where
    chat = documented(schema, "POST", "/api/chat/")
    assert {200, 400, 401, 403, 413, 415, 422, 429, 500, 503} == set(chat)
    assert set(chat) == set(documented(schema, "POST", "/api/chat/stream"))
    assert {202, 401, 403, 404, 422, 503} <= set(documented(schema, "POST", "/api/tasks/"))
    assert {200, 401, 403, 503} <= set(documented(schema, "GET", "/api/metrics"))
    assert 503 in documented(schema, "GET", "/api/health")


async def test_an_optional_body_is_an_object_never_null(schema, django_user_model):
    token, _ = await tokens(django_user_model)
    for method, path, operation in operations(schema):
        if "requestBody" in operation:
            body = operation["requestBody"]["content"][JSON]["schema"]
            assert {"type": "null"} not in body.get("anyOf", []), (method, path)
    response = await AsyncClient().post(
        "/api/chat/", "null", content_type=JSON, headers=bearer(token)
    )
    assert response.status_code == 400
    assert json.loads(response.content)["details"][0]["problem"] == "not_an_object"


async def test_every_error_a_client_meets_is_documented(schema, api, django_user_model):
    """Each request provokes one error; its status is documented for the operation and its
    body is the documented ``ErrorOut``."""
    token, staff = await tokens(django_user_model)
    client = AsyncClient()
    one = "/api/chat/conversations/{conversation_id}"
    missing = one.format(conversation_id=uuid.uuid4())
    too_big = json.dumps({"message": "x" * ops_settings.MAX_BODY_BYTES})
    other = json.dumps({"message": "hi", "conversation_id": str(uuid.uuid4())})
    # (method, operation, path sent, body, headers, status)
    cases: list[tuple[str, str, str, str, dict[str, str], int]] = [
        ("POST", "/api/chat/", "/api/chat/", '{"message": "hi"}', {}, 401),
        ("POST", "/api/chat/", "/api/chat/", '{"message": "hi"}', bearer("grc_nope"), 401),
        ("POST", "/api/chat/", "/api/chat/", '{"message": "   "}', bearer(token), 422),
        ("POST", "/api/chat/", "/api/chat/", other, bearer(token), 422),
        ("POST", "/api/chat/", "/api/chat/", '{"message": ', bearer(token), 400),
        ("POST", "/api/chat/", "/api/chat/", too_big, bearer(token), 413),
        ("POST", "/api/chat/stream", "/api/chat/stream", '{"message": ""}', bearer(token), 422),
        (
            "GET",
            "/api/chat/conversations",
            "/api/chat/conversations?limit=0",
            "",
            bearer(token),
            422,
        ),
        ("GET", one, missing, "", bearer(token), 404),
        ("DELETE", one, missing, "", bearer(token), 404),
        ("DELETE", one, one.format(conversation_id="not-a-uuid"), "", bearer(token), 422),
        (
            "POST",
            "/api/tasks/",
            "/api/tasks/",
            '{"task": "chat.tasks.causal_track"}',
            bearer(token),
            403,
        ),
        ("POST", "/api/tasks/", "/api/tasks/", '{"task": "no.such.task"}', bearer(staff), 404),
        ("POST", "/api/tasks/", "/api/tasks/", '{"task": 1}', bearer(staff), 422),
        ("GET", "/api/metrics", "/api/metrics", "", {}, 401),
    ]
    for method, operation, path, body, headers, status in cases:
        response = await client.generic(method, path, body, content_type=JSON, headers=headers)
        where = f"{method} {path} -> {response.status_code}"
        assert response.status_code == status, (where, response.content[:300])
        assert status in documented(schema, method, operation), where
        error = ErrorOut.model_validate_json(response.content)
        assert error.request_id == response["X-Request-ID"], where
    response = await client.post(
        "/api/chat/", "hi", content_type="text/plain", headers=bearer(token)
    )
    assert response.status_code == 415 and 415 in documented(schema, "POST", "/api/chat/")
    ErrorOut.model_validate_json(response.content)


async def test_a_throttled_request_is_the_documented_429(schema, api, django_user_model):
    token, _ = await tokens(django_user_model)
    api.GRACE_CHAT = {**api.GRACE_CHAT, "THROTTLE_USER": "1/hour"}
    client = AsyncClient()
    first = await client.get("/api/chat/conversations", headers=bearer(token))
    assert first.status_code == 200
    response = await client.get("/api/chat/conversations", headers=bearer(token))
    assert response.status_code == 429
    documented_429 = documented(schema, "GET", "/api/chat/conversations")[429]
    assert set(documented_429["headers"]) <= set(response.headers)
    assert int(response["Retry-After"]) >= 1
    assert ErrorOut.model_validate_json(response.content).error == "rate_limited"
