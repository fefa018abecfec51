"""The edges' OpenAPI documents describe what is served (the live check is test_fuzz_http)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchyard.admin.plugin import AdminPlugin
from switchyard.ingress.app import create_app
from switchyard.ingress.batches import BatchApi
from switchyard.ingress.fastpath import ROUTES
from tests.support import write_settings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def gateway_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings, _ = write_settings(Path(tmp_path_factory.mktemp("openapi")))
    return create_app(settings, "gateway", [AdminPlugin(settings)]).openapi()


def test_every_fast_path_route_is_documented(gateway_doc: dict[str, Any]) -> None:
    for path in ROUTES:
        operation = gateway_doc["paths"][path]["post"]
        assert {"200", "400", "401", "413", "429", "503", "504"} <= set(operation["responses"])
        assert operation["requestBody"]["content"]["application/json"]["schema"]["required"]


def test_every_batch_api_route_is_documented(gateway_doc: dict[str, Any]) -> None:
    """The Batch API's routes are plain routes FastAPI does not see: documented by hand, and
    so under the HTTP fuzzer (test_fuzz_http) like the rest."""
    api = BatchApi.__new__(BatchApi)  # the route table only, without an edge
    for path, method, _ in api.routes():
        operation = gateway_doc["paths"][path][method.lower()]
        assert {"200", "401"} <= set(operation["responses"]), (method, path)
        assert operation["security"], (method, path)


def test_tail_publishes_the_llm_api_without_admin(tmp_path: Path) -> None:
    settings, _ = write_settings(tmp_path)
    doc = create_app(settings, "tail").openapi()
    assert "/v1/chat/completions" in doc["paths"]
    assert not [p for p in doc["paths"] if p.startswith("/admin")]


def test_every_error_response_is_openai_shaped(gateway_doc: dict[str, Any]) -> None:
    """OpenAI-shaped, except under Anthropic's routes (``/messages`` and below)."""
    for path, item in gateway_doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/ready":
                    schema = response["content"]["application/json"]["schema"]
                    anthropic = path.endswith("/messages") or "/messages/" in path
                    shape = ["type", "error"] if anthropic else ["error"]
                    assert schema["required"] == shape, (method, path, status)


def test_admin_bodies_are_documented_from_their_decoders(gateway_doc: dict[str, Any]) -> None:
    create = gateway_doc["paths"]["/admin/v1/keys"]["post"]
    assert "201" in create["responses"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert "rpm" in body["properties"]
    secret = gateway_doc["paths"]["/admin/v1/secrets/{name}"]["put"]["requestBody"]
    assert secret["content"]["application/json"]["schema"]["required"] == ["value"]
    assert "AdminToken" in gateway_doc["components"]["securitySchemes"]


def test_the_key_create_documents_its_idempotency_header(gateway_doc: dict[str, Any]) -> None:
    create = gateway_doc["paths"]["/admin/v1/keys"]["post"]
    (header,) = [p for p in create.get("parameters", []) if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    assert header["required"] is False
    assert header["schema"]["maxLength"] == 255
