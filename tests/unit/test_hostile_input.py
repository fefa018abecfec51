"""Hostile bodies and headers against the pure decoders every hop runs."""

from __future__ import annotations

import msgspec
import pytest

from switchyard.dialects._common import decode_object
from switchyard.dialects.probes import probe_messages, probe_responses
from switchyard.errors import InvalidRequest
from switchyard.schemas.openai import model_of, probe
from switchyard.workers.modelproxy.call_prep import decode_request_body

pytestmark = pytest.mark.unit

DEEP = b'{"model":"m","messages":[{"role":"user","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"


def test_deeply_nested_json_is_400_not_500() -> None:
    """Found by the protocol suite: msgspec hit the recursion limit on a body nested 50,000
    levels deep and the edge answered 500 (the head and the model-proxy would have too)."""
    for op in ("chat", "complete", "embed"):
        with pytest.raises(InvalidRequest) as caught:
            probe(op, DEEP)
        assert caught.value.code == "invalid_json"
    with pytest.raises(InvalidRequest):
        model_of(DEEP)
    with pytest.raises(InvalidRequest):
        decode_request_body(DEEP)


def test_moderate_nesting_still_decodes() -> None:
    body = b'{"model":"m","messages":[{"role":"user","x":' + b"[" * 200 + b"]" * 200 + b"}]}"
    assert probe("chat", body).model == "m"
    assert msgspec.json.decode(body)["model"] == "m"


def test_duplicate_keys_decode_the_same_everywhere() -> None:
    """The edge (permission check), the head (routing) and the model-proxy (provider call)
    must agree on which ``model`` a body with a duplicate key names: the last one."""
    body = b'{"model":"a","messages":[{"role":"user","content":"x"}],"model":"b"}'
    assert probe("chat", body).model == "b"
    assert model_of(body).model == "b"
    assert decode_request_body(body)["model"] == "b"


def test_deeply_nested_responses_and_messages_bodies_are_400_not_500() -> None:
    """Found while removing a duplicate: the Responses probe and the dialects' body decoder
    caught msgspec's errors but not the recursion limit, so a deeply nested /v1/responses body
    raised RecursionError (a 500) where /v1/chat/completions answered 400."""
    deep = (
        b'{"model":"m","max_tokens":1,"input":"x","messages":[{"role":"user","content":"x"}],'
        b'"extra":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    )
    for check in (probe_responses, probe_messages, decode_object):
        with pytest.raises(InvalidRequest) as caught:
            check(deep)
        assert caught.value.status == 400
        assert caught.value.code == "invalid_json"
