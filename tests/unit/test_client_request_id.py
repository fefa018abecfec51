"""The request's id goes to OpenAI-compatible providers as ``X-Client-Request-Id`` (so their
logs can be matched to ours), on the litellm path only where litellm calls such a server."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from switchyard.config import prepare_litellm_environment
from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.providers import litellm_adapter
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.client_request_id import client_request_id

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
]

ID = "oncall-7.0193a1b2c3d4e5f6"


def _call(kind: str, model: str) -> ProviderCall:
    return ProviderCall(
        op="chat",
        body={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        stream=False,
        client_wants_usage=False,
        provider=Provider(kind=kind, api_base="http://127.0.0.1:9"),  # type: ignore[arg-type]
        provider_name="p",
        deployment=Deployment(provider="p", model=model),
        api_key=None,
        first_token_timeout=5,
        total_timeout=5,
        request_id=ID,
    )


def _litellm() -> Any:
    prepare_litellm_environment()
    return importlib.import_module("litellm")


def test_an_id_a_header_can_carry_is_sent_and_no_other() -> None:
    assert client_request_id(ID) == {"X-Client-Request-Id": ID}
    assert client_request_id("") == {}
    assert client_request_id("a" * 513) == {}  # OpenAI's limit is 512
    assert client_request_id("a\r\nX-Injected: 1") == {}
    assert client_request_id("caf\u00e9") == {}


def test_the_litellm_path_sends_it_to_openai_compatible_servers_only() -> None:
    lib = _litellm()
    for kind, model in (("litellm", "openai/gpt-4o-mini"), ("litellm", "hosted_vllm/llama")):
        args = litellm_adapter._arguments(_call(kind, model), stream=False, lib=lib)
        assert args["extra_headers"] == {"X-Client-Request-Id": ID}, model
    for kind, model in (("anthropic", "claude-3-5-haiku-latest"), ("gemini", "gemini-2.0-flash")):
        args = litellm_adapter._arguments(_call(kind, model), stream=False, lib=lib)
        assert "extra_headers" not in args, kind
