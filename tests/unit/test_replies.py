"""The reply codec: what writers put on the wire is what the reader decodes, typed."""

from __future__ import annotations

import pytest

from switchyard.bus import headers as h
from switchyard.bus.replies import (
    ACCEPTED_HEADERS,
    KEEPALIVE_HEADERS,
    ReplyKind,
    chunk_headers,
    decode_reply,
    error_from_reply,
    error_headers,
    final_headers,
)
from switchyard.errors import (
    ApiError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    ProviderError,
    ProviderRateLimited,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.schemas.openai import Usage, error_body

pytestmark = pytest.mark.unit


def test_signals_decode_as_their_kind() -> None:
    assert decode_reply(b"", ACCEPTED_HEADERS).kind is ReplyKind.ACCEPTED
    assert decode_reply(b"", KEEPALIVE_HEADERS).kind is ReplyKind.KEEPALIVE


def test_a_chunk_carries_its_delivery() -> None:
    reply = decode_reply(b'{"x":1}', chunk_headers(3, "1.2"))
    assert (reply.kind, reply.body, reply.delivery, reply.status) == (
        ReplyKind.CHUNK,
        b'{"x":1}',
        "1.2",
        200,
    )


def test_only_the_first_chunk_names_the_deployment() -> None:
    first = decode_reply(b"{}", chunk_headers(0, "1.1", deployment="d1", attempts=2))
    assert (first.seq, first.deployment, first.attempts) == (0, "d1", 2)
    later = decode_reply(b"{}", chunk_headers(1, "1.1"))
    assert (later.seq, later.deployment, later.attempts) == (1, "", 0)


def test_a_final_carries_deployment_attempts_and_usage() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8)
    reply = decode_reply(b"{}", final_headers(deployment="d1", attempts=2, usage=usage))
    assert reply.kind is ReplyKind.FINAL
    assert (reply.deployment, reply.attempts, reply.usage) == ("d1", 2, usage)
    bare = decode_reply(b"{}", final_headers())
    assert (bare.deployment, bare.attempts, bare.usage) == ("", 0, None)
    assert not reply.usage_estimated


def test_a_final_says_when_its_usage_is_an_estimate() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8)
    reply = decode_reply(b"{}", final_headers(usage=usage, usage_estimated=True))
    assert (reply.usage, reply.usage_estimated) == (usage, True)
    assert "Sy-Usage-Estimated" not in final_headers(usage_estimated=True)  # (no usage)


@pytest.mark.parametrize(
    "exc",
    [
        InvalidRequest("bad body", param="messages", code="invalid_json"),
        ModelNotFound("no such model", param="model"),
        NotFound("no route `x`", param="alias"),
        RateLimited("slow down", retry_after=2.5),
        ServiceUnavailable("queue full", code="queue_full", retry_after=1),
        ProviderError("upstream 500", provider="d1", code="provider_error"),
        ApiError("teapot", status=418, code="teapot"),
    ],
)
def test_an_error_round_trips_with_its_type_status_and_fields(exc: ApiError) -> None:
    reply = decode_reply(error_body(exc), error_headers(exc, deployment="d1", attempts=1))
    assert reply.kind is ReplyKind.ERROR
    back = error_from_reply(reply)
    assert type(back) is (type(exc) if not isinstance(exc, ProviderError) else ProviderError)
    assert (back.status, back.message, back.code, back.param, back.type) == (
        exc.status,
        exc.message,
        exc.code,
        exc.param,
        exc.type,
    )
    assert back.retry_after == exc.retry_after
    if isinstance(back, ProviderError):
        assert back.provider == "d1"


def test_a_provider_429_arrives_as_a_rate_limit() -> None:
    exc = ProviderRateLimited("busy", provider="d1", retry_after=3)
    back = error_from_reply(decode_reply(error_body(exc), error_headers(exc)))
    assert isinstance(back, RateLimited)
    assert back.status == 429
    assert back.retry_after == 3


def test_admin_service_replies_without_a_kind_are_final_or_error_by_status() -> None:
    assert decode_reply(b"{}", {h.STATUS: "200"}).kind is ReplyKind.FINAL
    assert decode_reply(b"{}", None).kind is ReplyKind.FINAL
    err = decode_reply(error_body(ModelNotFound("x")), {h.STATUS: "404"})
    assert err.kind is ReplyKind.ERROR
    assert isinstance(error_from_reply(err), ModelNotFound)


@pytest.mark.parametrize(
    "headers",
    [
        {h.KIND: "final", h.STATUS: "two hundred"},
        {h.KIND: "final", h.USAGE: "1,2"},
        {h.KIND: "final", h.USAGE: "a,b,c"},
        {h.KIND: "final", h.USAGE: "\u00b9,\u00b2,\u00b3"},  # isdigit() but not int()
        {h.KIND: "final", h.STATUS: "2\u00b2\u00b2"},
        {h.KIND: "final", h.ATTEMPTS: "-1"},
        {h.KIND: "error", h.STATUS: "500", h.RETRY_AFTER: "later"},
        {h.KIND: "nonsense"},
    ],
)
def test_malformed_reply_headers_read_as_defaults_never_raise(headers: dict[str, str]) -> None:
    reply = decode_reply(b"{}", headers)
    assert reply.usage is None
    assert reply.retry_after is None
    assert reply.status in (200, 500)


def test_an_error_body_that_is_not_openai_shaped_still_becomes_a_typed_error() -> None:
    back = error_from_reply(decode_reply(b"<html>oops</html>", {h.STATUS: "502"}))
    assert isinstance(back, ProviderError)
    assert back.status == 502
