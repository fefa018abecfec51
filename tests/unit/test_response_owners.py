"""Native Responses continuations: refused when no owner store can check them; the id of a
streamed answer read from its ``response.created`` event (:mod:`...response_owners`)."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.errors import InvalidRequest
from switchyard.schemas.routing import Deployment, Provider, ProviderKind
from switchyard.workers.modelproxy.dialects import plan
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.registry import Adapters
from switchyard.workers.modelproxy.response_owners import _owned_by, _owner, _streamed_id


def _call(op: str, kind: ProviderKind, **body: Any) -> ProviderCall:
    return ProviderCall(
        op=op,
        body={"model": "m", "input": "hi", **body},
        stream=False,
        client_wants_usage=False,
        provider=Provider(kind=kind, api_base="http://127.0.0.1:9"),
        provider_name="p",
        deployment=Deployment(provider="p", model="m"),
        api_key=None,
        first_token_timeout=5,
        total_timeout=5,
    )


@pytest.mark.parametrize("op", ["responses", "input_tokens"])
def test_a_native_continuation_nobody_can_check_is_refused(op: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        plan(_call(op, "openai", previous_response_id="resp_1"), Adapters())
    assert refused.value.param == "previous_response_id"


def test_native_requests_without_a_continuation_pass() -> None:
    adapters = Adapters()
    for body in ({}, {"previous_response_id": None}):
        adapter, call = plan(_call("responses", "openai", **body), adapters)
        assert adapter is adapters.passthrough()
        assert call.body == _call("responses", "openai", **body).body
    # Anthropic's Messages have no such field: passed through as before.
    adapter, _ = plan(_call("messages", "anthropic", previous_response_id="x"), adapters)
    assert adapter is adapters.passthrough()


def test_the_id_of_a_streamed_answer() -> None:
    created = (
        b"event: response.created\n"
        b'data: {"type":"response.created","response":{"id":"resp_abc","status":"in_progress"}}\n'
    )
    assert _streamed_id(created) == "resp_abc"
    delta = b'event: response.output_text.delta\ndata: {"type":"x","delta":"hi"}\n'
    assert _streamed_id(delta) is None
    assert _streamed_id(b"data: not json\n") is None
    assert _streamed_id(b'data: {"response":{"id":7}}\n') is None


def test_a_background_response_from_a_bus_caller_is_refused_before_openai() -> None:
    """The HTTP edges refuse ``background: true``; a caller on the bus skipped them, and the
    passthrough sent it to OpenAI, which keeps the answer where nobody can read it."""
    with pytest.raises(InvalidRequest) as caught:
        plan(_call("responses", "openai", background=True), Adapters())
    assert caught.value.param == "background"
    assert caught.value.code == "unsupported_parameter"
    adapter, _ = plan(_call("responses", "openai", background=False), Adapters())
    assert adapter is not None


def test_an_answer_is_the_keys_and_an_older_record_its_secrets() -> None:
    hashed = "a" * 64
    assert _owner("key_1", hashed) == b"id:key_1"
    assert _owner("", "") == b"internal"
    assert _owned_by(b"id:key_1", "key_1", hashed)
    assert _owned_by(b"id:key_1", "key_1", "b" * 64)  # the same key, a rotated secret
    assert not _owned_by(b"id:key_1", "key_2", hashed)
    assert _owned_by(hashed.encode(), "key_1", hashed)  # recorded by an older model-proxy
    assert not _owned_by(hashed.encode(), "key_1", "b" * 64)
    assert not _owned_by(b"internal", "key_1", hashed)
    assert not _owned_by(b"id:key_1", "", "")
