"""Native Responses continuations: refused when no owner store can check them; the id of a
streamed answer read from its ``response.created`` event; what a record holds, and whose it
is to this version and to older model-proxies (:mod:`...response_owners`)."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.errors import InvalidRequest
from switchyard.schemas.routing import Deployment, Provider, ProviderKind
from switchyard.workers.modelproxy.dialects import plan
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.registry import Adapters
from switchyard.workers.modelproxy.response_owners import (
    KEY_ID,
    _headers,
    _owned_by,
    _owner,
    _streamed_id,
)


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


def _older_model_proxy_passes(value: bytes, key_hash: str) -> bool:
    """What a model-proxy of 0.2.0 or 0.3.0 (5bef525) checks, and all it checks: the record's
    value against the continuing secret's hash (``entry.value != _owner(key_hash)`` there,
    ``_owner`` being ``(key_hash or "internal").encode()``); a record's headers it ignores."""
    return value == (key_hash or "internal").encode()


def test_an_older_model_proxy_reads_a_new_record_as_its_secrets() -> None:
    hashed = "a" * 64
    assert _older_model_proxy_passes(_owner(hashed), hashed)  # mixed versions, a rollback
    assert not _older_model_proxy_passes(_owner(hashed), "b" * 64)
    assert _headers("key_1") == {KEY_ID: "key_1"}  # the key's id rides in a header
    assert _older_model_proxy_passes(_owner(""), "")  # no client key: ``internal``, as before
    assert _headers("") is None


def test_the_key_id_decides_and_a_record_without_one_is_its_secrets() -> None:
    hashed, rotated = "a" * 64, "b" * 64
    # Recorded by this version: the key's, whichever of its secrets continues.
    assert _owned_by(hashed.encode(), "key_1", "key_1", hashed)
    assert _owned_by(hashed.encode(), "key_1", "key_1", rotated)
    assert not _owned_by(hashed.encode(), "key_1", "key_2", hashed)  # the id decides
    assert not _owned_by(hashed.encode(), "key_1", "", "")
    assert _owned_by(b"internal", "admin-deployment-test", "admin-deployment-test", "")
    assert not _owned_by(b"internal", "admin-deployment-test", "", "")
    # Recorded by an older model-proxy (no key id): its secret's, not a rotated one's.
    assert _owned_by(hashed.encode(), None, "key_1", hashed)
    assert not _owned_by(hashed.encode(), None, "key_1", rotated)
    assert not _owned_by(hashed.encode(), None, "", "")
    assert _owned_by(b"internal", None, "", "")
    assert not _owned_by(b"internal", None, "key_1", hashed)
    # Recorded by a build between 0.3.0 and this one (the id as the value).
    assert _owned_by(b"id:key_1", None, "key_1", rotated)
    assert not _owned_by(b"id:key_1", None, "key_2", hashed)
    assert not _owned_by(b"id:", None, "", "")
