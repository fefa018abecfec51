"""LiteLLM's timeouts as the import maps them (pure logic).

LiteLLM 1.110's router bounds a non-streamed call as a whole by ``timeout`` (else
``litellm_settings.request_timeout``, else ``router_settings.timeout``) and each *read* of a
stream by ``stream_timeout`` (else ``router_settings.stream_timeout``, else the timeout above):
Switchyard's ``request_s`` and ``first_token_s``; a stream as a whole has no LiteLLM limit, so
``stream_s`` stays at Switchyard's default (or the whole-call timeout where longer).
"""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.control.litellm_import import ImportResult, convert
from switchyard.control.litellm_timeouts import per_read_note
from switchyard.schemas.routing import route_table_problems
from switchyard.schemas.timeouts import DEFAULT_TIMEOUTS, Timeouts

pytestmark = pytest.mark.unit


def _entry(alias: str, **params: Any) -> dict[str, Any]:
    return {"model_name": alias, "litellm_params": {"model": "openai/gpt-4o", **params}}


def _timeouts(result: ImportResult, alias: str) -> Timeouts | None:
    return result.table.routes[alias].deployments[0].timeouts


def test_stream_timeout_is_the_wait_for_the_first_chunk_not_the_whole_stream() -> None:
    """It was mapped to stream_s: a 30 s stream_timeout cut every stream off after 30 s, and
    the first-token wait stayed 60 s."""
    result = convert({"model_list": [_entry("slow", timeout=300, stream_timeout=30)]})
    assert _timeouts(result, "slow") == Timeouts(first_token_s=30, stream_s=600, request_s=300)


def test_stream_timeout_alone_keeps_the_whole_call_at_the_default() -> None:
    result = convert({"model_list": [_entry("quick-start", stream_timeout=5)]})
    default = DEFAULT_TIMEOUTS
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
    assert _timeouts(result, "plain") == Timeouts(first_token_s=20, stream_s=600, request_s=20)
    assert _timeouts(result, "streamy") == Timeouts(first_token_s=4, stream_s=600, request_s=20)
    assert _timeouts(result, "own") == Timeouts(first_token_s=90, stream_s=600, request_s=90)
    said = "\n".join(result.defaults)
    assert "router_settings.timeout (20s)" in said
    assert "the 2 deployment(s) that set no timeout of their own" in said
    assert result.unmapped == [per_read_note(3)]


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
    assert _timeouts(result, "plain") == Timeouts(first_token_s=30, stream_s=600, request_s=30)
    assert _timeouts(result, "own") == Timeouts(first_token_s=90, stream_s=600, request_s=90)
    said = "\n".join(result.defaults)
    assert "litellm_settings.request_timeout (30s)" in said
    assert "the 1 deployment(s) that set no timeout of their own" in said
    assert result.unmapped == [per_read_note(2)]


def test_request_timeout_wins_over_the_routers_timeout_as_in_litellm() -> None:
    """LiteLLM's router reads an explicitly set litellm.request_timeout before its own
    timeout (checked against litellm 1.110's router), so the import does too, and says so."""
    doc = {
        "model_list": [_entry("plain")],
        "litellm_settings": {"request_timeout": 45},
        "router_settings": {"timeout": 20},
    }
    result = convert(doc)
    assert _timeouts(result, "plain") == Timeouts(first_token_s=45, stream_s=600, request_s=45)
    said = "\n".join(result.defaults)
    assert "litellm_settings.request_timeout (45s)" in said
    assert "router_settings.timeout (20s), which is therefore not used" in said


def test_a_deployments_request_timeout_is_its_own_timeout() -> None:
    """LiteLLM reads litellm_params.request_timeout where a deployment sets no timeout."""
    doc = {
        "model_list": [
            _entry("spelled", request_timeout=15),
            _entry("both", model="openai/gpt-4o-mini", timeout=8),
        ],
        "litellm_settings": {"request_timeout": 30},
    }
    result = convert(doc)
    assert _timeouts(result, "spelled") == Timeouts(first_token_s=15, stream_s=600, request_s=15)
    assert _timeouts(result, "both") == Timeouts(first_token_s=8, stream_s=600, request_s=8)
    assert result.defaults == []  # neither took the global default


def test_an_unusable_request_timeout_is_listed_and_the_routers_applies() -> None:
    doc = {
        "model_list": [_entry("m")],
        "litellm_settings": {"request_timeout": "never"},
        "router_settings": {"timeout": 20},
    }
    result = convert(doc)
    assert _timeouts(result, "m") == Timeouts(first_token_s=20, stream_s=600, request_s=20)
    assert result.unmapped == [
        "litellm_settings.request_timeout: `never` is not a number; "
        "router_settings.timeout applies instead",
        per_read_note(1),
    ]


def test_timeout_bounds_a_non_streamed_call_not_a_whole_stream() -> None:
    """It became stream_s too: a stream longer than `timeout` was cut mid-answer, where
    LiteLLM's router (which bounds each read of a stream by it) finishes it."""
    result = convert({"model_list": [_entry("paced", timeout=3)]})
    assert _timeouts(result, "paced") == Timeouts(first_token_s=3, stream_s=600, request_s=3)
    assert per_read_note(1) in result.unmapped  # no exact equivalent, and it says so


def test_a_whole_call_timeout_longer_than_the_default_also_bounds_streams() -> None:
    result = convert({"model_list": [_entry("long", timeout=1800)]})
    assert _timeouts(result, "long") == Timeouts(first_token_s=1800, stream_s=1800, request_s=1800)


def test_router_stream_timeout_is_the_first_chunk_wait_of_deployments_without_one() -> None:
    """router_settings.stream_timeout was ignored without a word."""
    doc = {
        "model_list": [_entry("plain"), _entry("own", model="openai/o", stream_timeout=50)],
        "router_settings": {"stream_timeout": 10},
        "litellm_settings": {"stream_timeout": 7},
    }
    result = convert(doc)
    assert _timeouts(result, "plain") == Timeouts(first_token_s=10, stream_s=600, request_s=600)
    assert _timeouts(result, "own") == Timeouts(first_token_s=50, stream_s=600, request_s=600)
    said = "\n".join(result.defaults)
    assert "router_settings.stream_timeout (10s)" in said
    assert "of the 1 deployment(s) without a stream_timeout of their own" in said
    assert any(
        line.startswith("litellm_settings.stream_timeout: LiteLLM's router does not read it")
        for line in result.unmapped
    )


def test_streams_read_the_global_request_timeout_before_their_own_when_the_router_has_one() -> None:
    """LiteLLM's stream order: stream_timeout, router stream_timeout, then the global
    request_timeout (kept only with a router timeout), and only then the deployment's."""
    doc = {
        "model_list": [_entry("own", timeout=5)],
        "litellm_settings": {"request_timeout": 45},
        "router_settings": {"timeout": 30},
    }
    assert _timeouts(convert(doc), "own") == Timeouts(first_token_s=45, stream_s=600, request_s=5)


@pytest.mark.parametrize("value", [-5, 0.0001, True, "soon", [1]])
def test_an_unusable_timeout_keeps_the_route_and_names_it(value: Any) -> None:
    """The whole route was dropped (exit 0, one line among the not-mapped)."""
    result = convert({"model_list": [_entry("kept", timeout=value)]})
    assert _timeouts(result, "kept") is None  # Switchyard's defaults
    assert result.dropped == []
    assert any(
        line.startswith("model_list[0].litellm_params.timeout:") and "(route kept)" in line
        for line in result.unmapped
    ), result.unmapped


def test_a_timeout_from_the_environment_is_read_as_litellm_reads_it() -> None:
    doc = {"model_list": [_entry("env", timeout="os.environ/LLM_TIMEOUT")]}
    found = convert(doc, {"LLM_TIMEOUT": "12"}.get)
    assert _timeouts(found, "env") == Timeouts(first_token_s=12, stream_s=600, request_s=12)
    nothing: dict[str, str] = {}
    missing = convert(doc, nothing.get)
    assert _timeouts(missing, "env") is None
    assert any(
        "`os.environ/LLM_TIMEOUT` names a variable this environment does not set" in line
        and "(route env)" in line
        for line in missing.unmapped
    )
    bad = convert(doc, {"LLM_TIMEOUT": "abc-secret"}.get)
    assert any("`$LLM_TIMEOUT` is not a number" in line for line in bad.unmapped)
    assert "abc-secret" not in "\n".join(bad.unmapped)  # the value is never quoted back
    unread = convert(doc)  # the admin UI: no environment of the LiteLLM proxy to read
    assert _timeouts(unread, "env") is None
    assert list(unread.table.routes) == ["env"]


def test_same_model_and_endpoint_with_other_timeouts_gets_its_own_provider() -> None:
    """Two aliases of one model at one endpoint with different timeouts: the preview showed
    them fine, then the route table refused them (one deployment, one queue, one setting)."""
    base = {"api_base": "http://llm.internal/v1", "api_key": "os.environ/K"}
    doc = {
        "model_list": [
            _entry("a", **base),
            _entry("b", **base, timeout=5),
            _entry("c", **base, timeout=5),
            _entry("d", **base),
        ]
    }
    result = convert(doc)
    assert route_table_problems(result.table) == []
    used = {a: r.deployments[0].provider for a, r in result.table.routes.items()}
    assert used["a"] == used["d"] != used["b"] == used["c"]
    first, second = result.table.providers[used["a"]], result.table.providers[used["b"]]
    assert first == second  # same endpoint, same key: only the queue is apart
    assert [s.name for s in result.secrets] == ["k"]
    assert any(f"gets provider `{used['b']}`" in line for line in result.defaults)
