"""One connected trace per request: edge -> head -> model-proxy, exported over OTLP/HTTP to a
real receiver; a client's ``traceparent`` becomes the edge span's parent."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio

from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP span kinds


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    otlp.start()
    try:
        yield otlp
    finally:
        otlp.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def traced(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI, receiver: OtlpReceiver
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {
            "t": {"deployments": [{"provider": "fake", "model": "echo"}]},
            "broken": {"deployments": [{"provider": "fake", "model": "midfail"}]},
            "rejected": {"deployments": [{"provider": "fake", "model": "status:400"}]},
            "failing": {"deployments": [{"provider": "fake", "model": "status:500"}]},
        },
        "telemetry": {"otlp_endpoint": receiver.endpoint, "export_delay_ms": 100},
    }
    stack = await start_stack(tmp_path_factory.mktemp("traced"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _request(stack: Stack, request_id: str, traceparent: str | None, stream: bool) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}", "x-request-id": request_id}
    if traceparent:
        headers["traceparent"] = traceparent
    body = {"model": "t", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(f"{stack.tail_url}/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 200, resp.text


async def _trace_of(receiver: OtlpReceiver, request_id: str) -> list[ReceivedSpan]:
    """Every span of the trace whose edge span carries ``request_id`` (waits for export)."""
    deadline = time.monotonic() + 15
    while True:
        spans = receiver.snapshot()
        # The edge makes the id unique: the client's own leads it (`<given>.<suffix>`).
        edge = [
            s
            for s in spans
            if str(s.attributes.get("switchyard.request_id", "")).startswith(f"{request_id}.")
        ]
        if edge:
            trace = [s for s in spans if s.trace_id == edge[0].trace_id]
            if {s.service for s in trace} >= {"tail", "head", "modelproxy"}:
                await asyncio.sleep(0.5)  # let stragglers of the same trace arrive
                return [s for s in receiver.snapshot() if s.trace_id == edge[0].trace_id]
        assert time.monotonic() < deadline, f"no complete trace for {request_id}: {spans}"
        await asyncio.sleep(0.1)


def _check_chain(trace: list[ReceivedSpan]) -> ReceivedSpan:
    """edge (server) -> head route (server) -> model-proxy queue wait + provider call."""
    [edge] = [s for s in trace if s.service == "tail"]
    [route] = [s for s in trace if s.service == "head"]
    proxy = {s.name: s for s in trace if s.service == "modelproxy"}
    assert edge.kind == SERVER
    assert edge.name == "chat t"
    assert route.name == "route"
    assert route.parent_span_id == edge.span_id
    assert route.attributes["switchyard.alias"] == "t"
    call = proxy["chat echo"]
    assert call.kind == CLIENT
    assert call.parent_span_id == route.span_id
    assert call.attributes["gen_ai.provider.name"] == "openai-compatible"
    assert call.attributes["gen_ai.request.model"] == "echo"
    assert call.attributes["gen_ai.usage.input_tokens"] == 7
    assert call.attributes["gen_ai.usage.output_tokens"] == 2
    assert "switchyard.queue.wait_s" in call.attributes
    wait = proxy["queue wait"]
    assert wait.kind == CONSUMER
    assert wait.parent_span_id == route.span_id
    return edge


async def test_one_connected_trace_per_request(traced: Stack, receiver: OtlpReceiver) -> None:
    for stream in (False, True):
        request_id = f"trace-{secrets.token_hex(4)}"
        await _request(traced, request_id, None, stream)
        trace = await _trace_of(receiver, request_id)
        edge = _check_chain(trace)
        assert edge.parent_span_id == ""  # a new trace: the edge span is its root
        if stream:
            call = next(s for s in trace if s.name == "chat echo")
            assert call.attributes["gen_ai.response.time_to_first_chunk"] >= 0


async def test_a_client_traceparent_becomes_the_parent(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    request_id = f"trace-{secrets.token_hex(4)}"
    await _request(traced, request_id, f"00-{trace_id}-{parent_id}-01", False)
    trace = await _trace_of(receiver, request_id)
    edge = _check_chain(trace)
    assert edge.trace_id == trace_id
    assert edge.parent_span_id == parent_id


async def test_a_stream_that_fails_after_its_200_keeps_the_200_on_the_edge_span(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    """The client got a 200 and then an error event: the edge span says 200 and names the
    error (an explorer found the error's 502 there, a status no client saw)."""
    request_id = f"trace-{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {traced.api_key}", "x-request-id": request_id}
    body = {"model": "broken", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(f"{traced.tail_url}/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 200
    assert '"error"' in resp.text  # the failure reached the client as an event
    trace = await _trace_of(receiver, request_id)
    [edge] = [s for s in trace if s.service == "tail"]
    assert edge.attributes["http.response.status_code"] == 200
    # ...and names what failed by the class the metrics use (not the provider's own code)
    [call] = [s for s in trace if s.name == "chat midfail"]
    assert edge.attributes["error.type"] == call.attributes["error.type"] == "provider_error"


async def test_spans_name_an_error_by_the_class_the_metrics_use(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    """A provider's own error code passed to the client (``e400`` here) is unbounded: the
    metrics count it as its class, and the spans now say the same class in ``error.type``
    (they said ``e400``), with the provider's code beside it."""
    request_id = f"trace-{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {traced.api_key}", "x-request-id": request_id}
    body = {"model": "rejected", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(f"{traced.tail_url}/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "e400"  # the client still gets the provider's code
    trace = await _trace_of(receiver, request_id)
    [edge] = [s for s in trace if s.service == "tail"]
    [call] = [s for s in trace if s.name == "chat status:400"]
    classes = {
        labels.get("error_type")
        for name, labels, value in await traced.samples("tail")
        if name == "gen_ai_server_request_duration_seconds_count"
        and labels.get("gen_ai_request_model") == "rejected"  # routed: its alias is a label
        and value > 0  # (an alias's refusal classes exist at 0 once it is served)
    }
    assert classes == {edge.attributes["error.type"]}  # what the dashboard shows for it
    assert call.attributes["error.type"] == edge.attributes["error.type"] != "e400"
    assert edge.attributes["switchyard.error.code"] == "e400"
    assert edge.attributes["http.response.status_code"] == 400


async def _edge_span(receiver: OtlpReceiver, request_id: str) -> ReceivedSpan:
    """The edge's span of the request ``request_id`` (waits for its export)."""
    deadline = time.monotonic() + 15
    while True:
        found = [
            s
            for s in receiver.snapshot()
            if s.service == "tail"
            and str(s.attributes.get("switchyard.request_id", "")).startswith(f"{request_id}.")
        ]
        if found:
            [edge] = found
            return edge
        assert time.monotonic() < deadline, f"no edge span for {request_id}"
        await asyncio.sleep(0.1)


async def test_requests_refused_at_the_edge_have_their_span_too(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    """A bad key (401), an invalid body (400) and a key's rate limit (429) are answered before
    the request has an envelope: they had no span at all (a 404 from the head had one), while
    every request is one trace and its x-request-id is the id to look it up by."""
    limited, _ = await traced.new_key("trace-rpm", rpm=1)
    good = {"model": "t", "messages": [{"role": "user", "content": "hi"}]}
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    cases = [  # (api key, body, traceparent, status, error.type)
        ("sk-not-a-key", good, None, 401, "invalid_api_key"),
        (traced.api_key, b"{not json", f"00-{trace_id}-{parent_id}-01", 400, "invalid_json"),
        (limited, good, None, 200, None),
        (limited, good, None, 429, "rate_limit_exceeded"),
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        for api_key, body, traceparent, status, error in cases:
            request_id = f"refused-{secrets.token_hex(4)}"
            headers = {"Authorization": f"Bearer {api_key}", "x-request-id": request_id}
            if traceparent:
                headers["traceparent"] = traceparent
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            resp = await http.post(
                f"{traced.tail_url}/v1/chat/completions", content=content, headers=headers
            )
            assert resp.status_code == status, resp.text
            edge = await _edge_span(receiver, request_id)
            assert edge.kind == SERVER
            assert edge.attributes["http.response.status_code"] == status
            assert edge.attributes.get("error.type") == error
            if traceparent:  # the client's trace goes on through a refusal too
                assert (edge.trace_id, edge.parent_span_id) == (trace_id, parent_id)
            assert api_key.encode() not in edge.raw  # (a bad key is no span attribute)


async def test_a_provider_call_span_says_the_providers_status(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    """A provider's 500 is a 502 to the client: the provider-call span said 502 (Switchyard's
    answer) on every attempt; it says the provider's 500, and the edge's span the 502."""
    request_id = f"trace-{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {traced.api_key}", "x-request-id": request_id}
    body = {"model": "failing", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(f"{traced.tail_url}/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 502, resp.text
    trace = await _trace_of(receiver, request_id)
    [edge] = [s for s in trace if s.service == "tail"]
    assert edge.attributes["http.response.status_code"] == 502
    calls = [s for s in trace if s.name == "chat status:500"]
    assert calls
    assert {c.attributes["http.response.status_code"] for c in calls} == {500}
    assert {c.attributes["error.type"] for c in calls} == {"provider_error"}
