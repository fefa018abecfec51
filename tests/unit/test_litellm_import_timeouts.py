"""LiteLLM's timeouts as the import maps them (pure logic).

LiteLLM's ``stream_timeout`` is its wait for the *first chunk* of a streamed answer (its docs,
"Timeouts": "maximum time to wait for the first chunk"); ``timeout`` is the whole call, and
``router_settings.timeout`` the router-wide default for deployments that set none.
"""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.control.litellm_import import ImportResult, convert
from switchyard.schemas.routing import Timeouts

pytestmark = pytest.mark.unit


def _entry(alias: str, **params: Any) -> dict[str, Any]:
    return {"model_name": alias, "litellm_params": {"model": "openai/gpt-4o", **params}}


def _timeouts(result: ImportResult, alias: str) -> Timeouts | None:
    return result.table.routes[alias].deployments[0].timeouts


def test_stream_timeout_is_the_wait_for_the_first_chunk_not_the_whole_stream() -> None:
    """It was mapped to stream_s: a 30 s stream_timeout cut every stream off after 30 s, and
    the first-token wait stayed 60 s."""
    result = convert({"model_list": [_entry("slow", timeout=300, stream_timeout=30)]})
    assert _timeouts(result, "slow") == Timeouts(first_token_s=30, stream_s=300, request_s=300)


def test_stream_timeout_alone_keeps_the_whole_call_at_the_default() -> None:
    result = convert({"model_list": [_entry("quick-start", stream_timeout=5)]})
    default = Timeouts()
    assert _timeouts(result, "quick-start") == Timeouts(
        first_token_s=5, stream_s=default.stream_s, request_s=default.request_s
    )


def test_router_timeout_is_the_default_of_deployments_without_their_own() -> None:
    """router_settings.timeout was dropped without a word: the deployments kept 600 s."""
    doc = {
        "model_list": [
            _entry("plain"),
            _entry("streamy", stream_timeout=4),
            _entry("own", timeout=90),
        ],
        "router_settings": {"timeout": 20},
    }
    result = convert(doc)
    assert _timeouts(result, "plain") == Timeouts(first_token_s=20, stream_s=20, request_s=20)
    assert _timeouts(result, "streamy") == Timeouts(first_token_s=4, stream_s=20, request_s=20)
    assert _timeouts(result, "own") == Timeouts(first_token_s=60, stream_s=90, request_s=90)
    said = "\n".join(result.defaults)
    assert "router_settings.timeout (20s)" in said
    assert "the 2 deployment(s) that set no timeout of their own" in said
    assert result.unmapped == []


def test_an_unusable_router_timeout_is_listed_as_not_mapped() -> None:
    result = convert({"model_list": [_entry("m")], "router_settings": {"timeout": "soon"}})
    assert _timeouts(result, "m") is None
    assert any(line.startswith("router_settings.timeout: `soon`") for line in result.unmapped)


def test_litellm_settings_request_timeout_is_the_default_of_deployments_without_their_own() -> None:
    """litellm_settings.request_timeout (LiteLLM's global per-request timeout) was dropped
    without a word: the deployments kept Switchyard's 600 s."""
    doc = {
        "model_list": [_entry("plain"), _entry("own", timeout=90)],
        "litellm_settings": {"request_timeout": 30},
    }
    result = convert(doc)
    assert _timeouts(result, "plain") == Timeouts(first_token_s=30, stream_s=30, request_s=30)
    assert _timeouts(result, "own") == Timeouts(first_token_s=60, stream_s=90, request_s=90)
    said = "\n".join(result.defaults)
    assert "litellm_settings.request_timeout (30s)" in said
    assert "the 1 deployment(s) that set no timeout of their own" in said
    assert result.unmapped == []


def test_request_timeout_wins_over_the_routers_timeout_as_in_litellm() -> None:
    """LiteLLM's router reads an explicitly set litellm.request_timeout before its own
    timeout (checked against litellm 1.110's router), so the import does too, and says so."""
    doc = {
        "model_list": [_entry("plain")],
        "litellm_settings": {"request_timeout": 45},
        "router_settings": {"timeout": 20},
    }
    result = convert(doc)
    assert _timeouts(result, "plain") == Timeouts(first_token_s=45, stream_s=45, request_s=45)
    said = "\n".join(result.defaults)
    assert "litellm_settings.request_timeout (45s)" in said
    assert "router_settings.timeout (20s), which is therefore not used" in said


def test_a_deployments_request_timeout_is_its_own_timeout() -> None:
    """LiteLLM reads litellm_params.request_timeout where a deployment sets no timeout."""
    doc = {
        "model_list": [_entry("spelled", request_timeout=15), _entry("both", timeout=8)],
        "litellm_settings": {"request_timeout": 30},
    }
    result = convert(doc)
    assert _timeouts(result, "spelled") == Timeouts(first_token_s=15, stream_s=15, request_s=15)
    assert _timeouts(result, "both") == Timeouts(first_token_s=8, stream_s=8, request_s=8)
    assert result.defaults == []  # neither took the global default


def test_an_unusable_request_timeout_is_listed_and_the_routers_applies() -> None:
    doc = {
        "model_list": [_entry("m")],
        "litellm_settings": {"request_timeout": "never"},
        "router_settings": {"timeout": 20},
    }
    result = convert(doc)
    assert _timeouts(result, "m") == Timeouts(first_token_s=20, stream_s=20, request_s=20)
    assert result.unmapped == [
        "litellm_settings.request_timeout: `never` is not a number; "
        "router_settings.timeout applies instead"
    ]
