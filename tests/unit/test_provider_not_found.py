"""A provider's 404 (or 410) about something the client named reaches the client as that
status, in the provider's words.

An explorer continued a Response whose id OpenAI did not know: OpenAI answered 404
``previous_response_not_found`` (param ``previous_response_id``) and the client got a 400, as
if its request were malformed, where OpenAI itself (and Switchyard's own check of a
``previous_response_id``, docs/security.md) answers 404. A 404 about the deployment's model, or
one without an error body (a wrong ``api_base``), is still the deployment's failure. Pure
logic: the OpenAI-compatible adapter's translation, the reply that carries it on the bus, and
the HTTP answer the edge makes of it.
"""

from __future__ import annotations

import msgspec
import pytest

from switchyard.bus import replies
from switchyard.errors import NotFound, ProviderError
from switchyard.runtime.http import error_response
from switchyard.schemas.openai import error_body
from switchyard.workers.modelproxy.providers.openai_compat import http_error
from switchyard.workers.modelproxy.providers.upstream_errors import retryable
from switchyard.workers.modelproxy.traffic import deployment_failed

PREVIOUS_NOT_FOUND = (
    b'{"error":{"message":"Previous response with id \'resp_x\' not found.",'
    b'"type":"invalid_request_error","param":"previous_response_id",'
    b'"code":"previous_response_not_found"}}'
)
NO_SUCH_FILE = (
    b'{"error":{"message":"No such File object: file-abc","type":"invalid_request_error",'
    b'"param":"id","code":null}}'
)


def _client_sees(failure: Exception) -> tuple[int, dict[str, object]]:
    """What an HTTP client gets for ``failure`` sent back over the bus by a model-proxy."""
    assert isinstance(failure, NotFound | ProviderError)
    reply = replies.decode_reply(
        error_body(failure), replies.error_headers(failure, deployment="d1")
    )
    response = error_response(replies.error_from_reply(reply))
    error = msgspec.json.decode(bytes(response.body))["error"]
    return response.status_code, error


def test_an_unknown_previous_response_is_the_providers_404() -> None:
    failure = http_error(404, PREVIOUS_NOT_FOUND, {}, "openai", None)
    assert isinstance(failure, NotFound)
    assert not retryable(failure)  # every deployment would say the same
    assert not deployment_failed(failure)
    status, error = _client_sees(failure)
    assert status == 404
    assert error == {
        "message": "Previous response with id 'resp_x' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }


@pytest.mark.parametrize("status", [404, 410])
def test_an_id_the_provider_does_not_have_keeps_its_status(status: int) -> None:
    failure = http_error(status, NO_SUCH_FILE, {}, "openai", None)
    assert isinstance(failure, NotFound)
    assert not retryable(failure)
    seen, error = _client_sees(failure)
    assert seen == status
    assert error["message"] == "No such File object: file-abc"
    assert error["param"] == "id"
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body",
    [b"", b"<html><body>404 Not Found</body></html>", b"404: Not Found", b"404 page not found\n"],
    ids=["empty", "html", "aiohttp-text", "go-text"],
)
def test_a_404_without_an_error_body_is_still_the_deployments(body: bytes) -> None:
    """A wrong ``api_base`` answers 404 with a page, a line of text or nothing: tried
    elsewhere, cooled (a plain-text body is said after "answered HTTP 404")."""
    failure = http_error(404, body, {}, "openai", None)
    assert isinstance(failure, ProviderError)
    assert retryable(failure)
    assert failure.status == 502
    assert failure.code == "provider_model_not_found"


def test_a_404_for_the_deployments_model_is_still_the_deployments() -> None:
    body = b'{"error":{"message":"The model `gpt-9` does not exist","code":"model_not_found"}}'
    failure = http_error(404, body, {}, "openai", None)
    assert isinstance(failure, ProviderError)
    assert retryable(failure)


@pytest.mark.parametrize(
    ("path", "hint"),
    [("/chat/completions", True), ("/v1/chat/completions", False), ("", False)],
)
def test_a_404_without_an_error_names_the_path_and_the_missing_v1(path: str, hint: bool) -> None:
    """A newcomer's api_base without /v1: told the deployment's model was not served, with
    neither the path nor /v1 named. Still the deployment's failure."""
    failure = http_error(404, b"404: Not Found", {}, "nov1", None, path=path)
    assert isinstance(failure, ProviderError)
    assert failure.status == 502
    assert retryable(failure)
    assert failure.message.startswith("provider nov1 answered HTTP 404")
    assert (f"for {path}," in failure.message) == bool(path)
    assert ("does its api_base lack /v1?" in failure.message) == hint
    assert "does not serve this deployment's model" not in failure.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"detail": "Not Found"}',  # FastAPI (vLLM, SGLang) at a path it does not serve
        b'{"error": {"code": "404", "message": "Resource not found"}}',  # Azure, wrong URL
        b'{"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}',
        b'{"error": "Unexpected endpoint or method. (POST /chat/completions)"}',  # LM Studio
    ],
    ids=["fastapi", "azure", "llama.cpp", "lm-studio"],
)
def test_a_404_that_names_nothing_of_the_request_is_the_deployments(body: bytes) -> None:
    """A reviewer's find: read leniently, these became the client's 404 (not retried, not
    cooled), where a wrong api_base is the deployment's failure; the server's words follow."""
    failure = http_error(404, body, {}, "nov1", None, path="/chat/completions")
    assert isinstance(failure, ProviderError)
    assert retryable(failure)
    assert failure.message.startswith("provider nov1 answered HTTP 404 for /chat/completions")
    assert "does its api_base lack /v1?" in failure.message
