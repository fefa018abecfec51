"""Which 404 of the legacy completions endpoint says the deployment does not serve it (tried
elsewhere, cooled nowhere, the client's 400 when no deployment serves it), and which still
says the deployment's model is not there (cooled, as on chat)."""

from __future__ import annotations

import json

import pytest

from switchyard.bus.envelope import Envelope
from switchyard.errors import InvalidRequest, ProviderError
from switchyard.workers.modelproxy import reroutes
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.openai_compat import http_error

pytestmark = pytest.mark.unit

CHAT_MODEL = {
    "error": {
        "message": "This is a chat model and not supported in the v1/completions endpoint. "
        "Did you mean to use v1/chat/completions?",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
}
NO_MODEL = {"error": {"message": "The model `gpt-x` does not exist", "code": "model_not_found"}}
VLLM_NO_MODEL = {
    "object": "error",
    "message": "The model `x` does not exist.",
    "type": "NotFoundError",
    "param": None,
    "code": 404,
}


def _404(body: object, op: str) -> Exception:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http_error(404, data, {}, "p", None, path="/v1/completions", op=op)


VLLM_NO_COMPLETIONS = {
    "object": "error",
    "message": "The model does not support Completions API",
    "type": "NotFoundError",
    "code": 404,
}
AZURE_NO_COMPLETIONS = {
    "error": {
        "code": "OperationNotSupported",
        "message": "The completion operation does not work with the specified model, gpt-4o.",
    }
}
# 404s that say only "nothing here": a proxy or ingress whose backend died answers them too.
NGINX = b"<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1>"
NGINX += b"</center><hr><center>nginx</center></body></html>"
GENERIC_404S = [
    b"404: Not Found",
    NGINX,
    b"default backend - 404",
    b"404 page not found",
    {"detail": "Not Found"},
    {"code": "404", "message": "Resource not found"},
    {"error": {"code": "404", "message": "Resource not found"}},
    b"",
]


@pytest.mark.parametrize("body", [CHAT_MODEL, VLLM_NO_COMPLETIONS, AZURE_NO_COMPLETIONS])
def test_a_404_saying_the_endpoint_is_not_served_is_no_failure_of_the_deployment(
    body: object,
) -> None:
    exc = _404(body, "complete")
    assert isinstance(exc, ue.EndpointNotServed), exc
    assert isinstance(exc, InvalidRequest)  # the client's 400 when no deployment serves it
    assert (exc.status, exc.code, exc.param) == (400, "endpoint_not_supported", "model")
    assert "/v1/completions" in exc.message
    assert ue.retryable(exc)  # the route's other deployments are tried...
    assert ue.no_cooldown(exc)  # ...and this one is not cooled


@pytest.mark.parametrize("body", GENERIC_404S)
def test_a_bare_404_on_completions_is_the_deployments_failure(body: object) -> None:
    """A dead backend behind an ingress answers like a server without the path: cooled and
    a 502 (an alert), not a 400 blaming the model that cools nothing."""
    exc = _404(body, "complete")
    assert isinstance(exc, ProviderError), exc
    assert not isinstance(exc, ue.EndpointNotServed)
    assert exc.retryable
    assert not ue.no_cooldown(exc)


@pytest.mark.parametrize("body", [NO_MODEL, VLLM_NO_MODEL, {"error": 'model "x" not found'}])
def test_a_model_that_does_not_exist_fails_as_on_chat(body: object) -> None:
    exc = _404(body, "complete")
    assert isinstance(exc, ProviderError), exc
    assert exc.retryable
    assert not ue.no_cooldown(exc)
    assert exc.code == "provider_model_not_found"


@pytest.mark.parametrize("body", [CHAT_MODEL, b"404: Not Found"])
def test_chat_and_embeddings_404s_are_unchanged(body: object) -> None:
    for op in ("chat", "embed"):
        exc = _404(body, op)
        assert isinstance(exc, ProviderError), (op, exc)
        assert not ue.no_cooldown(exc)


def test_answered_by_the_model_proxy_it_names_the_route() -> None:
    exc = _404(CHAT_MODEL, "complete")
    assert isinstance(exc, ue.EndpointNotServed)
    env = Envelope(request_id="r", op="complete", alias="legacy")
    said = reroutes.said_here(exc, env, "p--m")
    assert said.message.startswith("no deployment of `legacy` can take this request: p--m: ")
    assert (said.status, said.code, said.param) == (400, "endpoint_not_supported", "model")
    other = ProviderError("x", provider="p")
    assert reroutes.said_here(other, env, "p--m") is other
