"""The admin side's bounds, as pure logic: capped body reads, the CSRF origin check behind a
proxy, key and route text lengths, and LiteLLM entries whose credentials cannot be imported."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from starlette.requests import Request
from starlette.types import Message

from switchyard.admin.bodies import decode
from switchyard.admin.key_fields import validated as _validated
from switchyard.admin.ui import csrf
from switchyard.control.litellm_import import convert_text
from switchyard.errors import InputError, InvalidRequest, PayloadTooLarge
from switchyard.runtime.request_body import read_body
from switchyard.schemas.keys import MAX_MODELS, MAX_TEXT_CHARS
from switchyard.schemas.routing import (
    MAX_API_BASE_CHARS,
    MAX_DESCRIPTION_CHARS,
    Provider,
    RouteTable,
    route_table_findings,
)

pytestmark = pytest.mark.unit


class Body:
    """An ASGI ``receive`` handing out ``chunks``, counting how many were asked for."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.asked = 0

    async def __call__(self) -> Message:
        self.asked += 1
        more = self.asked < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.asked - 1], "more_body": more}


def _post(headers: dict[str, str], body: Body | None = None) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope, body or Body([b""]))


async def test_a_body_is_read_whole_up_to_the_cap() -> None:
    body = Body([b"ab", b"cd", b"e"])
    assert await read_body(_post({}, body), 5) == b"abcde"


async def test_a_declared_length_past_the_cap_is_refused_before_reading() -> None:
    body = Body([b"x" * 10])
    with pytest.raises(PayloadTooLarge) as caught:
        await read_body(_post({"content-length": "11"}, body), 10)
    assert body.asked == 0
    assert caught.value.status == 413
    assert "limit of 10 bytes" in caught.value.message


async def test_a_body_without_a_length_is_cut_off_once_past_the_cap() -> None:
    body = Body([b"x" * 6, b"x" * 6, b"x" * 6, b"x" * 6])
    with pytest.raises(PayloadTooLarge):
        await read_body(_post({"transfer-encoding": "chunked"}, body), 10)
    assert body.asked == 2  # the chunk that passed the cap is the last one read


def _from(headers: dict[str, str]) -> Request:
    return _post({"host": "127.0.0.1:8081", **headers})


PROXY = {"x-forwarded-host": "admin.example.com", "x-forwarded-proto": "https"}


def test_behind_a_proxy_the_origin_is_compared_with_what_the_proxy_says() -> None:
    assert csrf.same_origin(_from({**PROXY, "origin": "https://admin.example.com"}))
    assert csrf.same_origin(_from({**PROXY, "origin": "https://Admin.Example.com"}))
    default_port = {**PROXY, "x-forwarded-host": "admin.example.com:443"}
    assert csrf.same_origin(_from({**default_port, "origin": "https://admin.example.com"}))
    other_port = {**PROXY, "x-forwarded-host": "admin.example.com:8443"}
    assert csrf.same_origin(_from({**other_port, "origin": "https://admin.example.com:8443"}))
    assert not csrf.same_origin(_from({**other_port, "origin": "https://admin.example.com"}))
    chained = {"x-forwarded-host": "admin.example.com, inner", "x-forwarded-proto": "https"}
    assert csrf.same_origin(_from({**chained, "origin": "https://admin.example.com"}))
    # The direct comparison with Host is unchanged.
    assert csrf.same_origin(_from({"origin": "http://127.0.0.1:8081"}))


def test_a_foreign_origin_is_refused_with_or_without_forwarded_headers() -> None:
    for headers in (PROXY, {}, {"x-forwarded-host": "evil.example"}):
        assert not csrf.same_origin(_from({**headers, "origin": "https://evil.example"}))
    # The public name without the proxy saying so, or with another scheme than it says.
    assert not csrf.same_origin(_from({"origin": "https://admin.example.com"}))
    assert not csrf.same_origin(_from({**PROXY, "origin": "http://admin.example.com"}))
    only_host = {"x-forwarded-host": "admin.example.com"}  # the connection's scheme: http
    assert not csrf.same_origin(_from({**only_host, "origin": "https://admin.example.com"}))
    # A forwarded host that is not a plain host is ignored, as everywhere else.
    odd = {**PROXY, "x-forwarded-host": "admin.example.com/path"}
    assert not csrf.same_origin(_from({**odd, "origin": "https://admin.example.com/path"}))
    assert not csrf.same_origin(_from({**PROXY, "origin": "null"}))


@pytest.mark.parametrize("field", ["name", "owner", "team"])
def test_key_text_is_bounded(field: str) -> None:
    assert _validated({field: "x" * MAX_TEXT_CHARS})[field] == "x" * MAX_TEXT_CHARS
    with pytest.raises(InputError) as caught:
        _validated({field: "x" * (MAX_TEXT_CHARS + 1)})
    assert caught.value.field == field
    assert f"at most {MAX_TEXT_CHARS}" in caught.value.problem


def test_key_model_patterns_are_bounded() -> None:
    assert _validated({"models": "a, b"})["models"] == ("a", "b")
    with pytest.raises(InputError, match="model pattern"):
        _validated({"models": ["gpt-4o", "m" * (MAX_TEXT_CHARS + 1)]})
    with pytest.raises(InputError, match=f"at most {MAX_MODELS}"):
        _validated({"models": [f"m{i}" for i in range(MAX_MODELS + 1)]})


def _table(description: str = "", api_base: str = "http://h/v1") -> RouteTable:
    doc: dict[str, Any] = {
        "providers": {"p": {"kind": "openai-compatible", "api_base": api_base}},
        "routes": {"r": {"deployments": [{"provider": "p", "model": "m"}]}},
    }
    doc["routes"]["r"]["description"] = description
    return msgspec.convert(doc, RouteTable)


def test_route_and_provider_text_is_bounded_for_what_an_edit_touches() -> None:
    long = _table(description="d" * (MAX_DESCRIPTION_CHARS + 1))
    found = route_table_findings(long)
    assert [p.field for p in found.problems] == ["routes.r.description"]
    assert f"at most {MAX_DESCRIPTION_CHARS}" in found.problems[0].problem
    assert route_table_findings(_table(description="d" * MAX_DESCRIPTION_CHARS)).problems == []
    # Stored before the bound and left as it is: kept (an edit elsewhere still goes through).
    kept = route_table_findings(long, previous=long)
    assert kept.problems == []
    assert [p.field for p in kept.kept] == ["routes.r.description"]
    url = "http://h/" + "v" * MAX_API_BASE_CHARS
    found = route_table_findings(_table(api_base=url))
    assert [p.field for p in found.problems] == ["providers.p.api_base"]
    assert url not in found.problems[0].problem  # said by its length, not quoted


CREDENTIALED = """
model_list:
  - model_name: lit-c
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/LIT_C_KEY
      api_base: http://127.0.0.1:8990/v1
      extra_headers: {"Authorization": "Bearer HDR-CANARY-123", "X-Api-Key": "HDR2-CANARY"}
      organization: org-CANARY-789
  - model_name: lit-d
    litellm_params:
      model: bedrock/anthropic.claude-3
      aws_access_key_id: AKIA-CANARY-1
      aws_secret_access_key: AWSSECRET-CANARY-2
      aws_region_name: us-east-1
  - model_name: lit-e
    litellm_params:
      model: azure/gpt4
      api_base: https://x.openai.azure.com
      api_key: os.environ/AZ
      azure_ad_token: AADTOKEN-CANARY-3
      api_version: "2024-02-01"
  - model_name: lit-ok
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OK_KEY
      input_cost_per_token: 0.000001
      tags: [a]
      organization: null
"""


def test_credentials_litellm_would_send_are_never_dropped_silently() -> None:
    result = convert_text(CREDENTIALED)
    assert list(result.table.routes) == ["lit-ok"]
    dropped = dict(result.dropped)
    assert set(dropped) == {"lit-c", "lit-d", "lit-e"}
    assert "extra_headers, organization:" in dropped["lit-c"]
    assert "aws_access_key_id, aws_secret_access_key:" in dropped["lit-d"]
    assert "Bedrock API key as api_key" in dropped["lit-d"]
    assert "azure_ad_token:" in dropped["lit-e"]
    ignored = [line for line in result.unmapped if "ignored:" in line]
    assert ignored == [
        "model_list[3].litellm_params: ignored: input_cost_per_token, organization, tags "
        "(route lit-ok): no Switchyard provider or deployment setting for them"
    ]
    said = repr(result.dropped) + repr(result.unmapped) + repr(result.table)
    assert "CANARY" not in said  # named, never shown


def test_an_unknown_provider_kind_in_the_api_lists_the_kinds() -> None:
    """PUT /admin/v1/providers/NAME with `"kind": "openai-compat"` said only `Invalid enum
    value 'openai-compat'`."""
    with pytest.raises(InvalidRequest) as info:
        decode(b'{"kind": "openai-compat"}', Provider, "provider")
    assert info.value.param == "kind"
    assert "Invalid enum value 'openai-compat'" in info.value.message
    assert "use one of: demo, openai, azure, openai-compatible" in info.value.message
    with pytest.raises(InvalidRequest) as table:  # a provider inside a whole table, too
        decode(b'{"providers": {"x": {"kind": "nope"}}}', RouteTable, "route table")
    assert "openai-compatible" in table.value.message
