"""A whole answer larger than the edges take, on the session stack.

A provider's non-streamed answer travels to the edge as one NATS message, which the server
caps (``max_payload``, 8 MiB here), or in parts up to the edges' ``ingress.max_answer_bytes``
(24 MiB here: tests/test_answer_parts.py). A larger one made the model-proxy's send fail
outside any handling: the client got 500 "internal error in the model proxy" and the log a
traceback. It is now the client's 413 ``answer_too_large`` saying what to do (a 413, not a
502, which every SDK retried, each retry a billed provider call), tried on no other deployment
(their answer would be as large), and the model-proxy serves on. Nor is it read past the
bound (34 MiB here, sent without a Content-Length): it was held whole in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from switchyard.runtime import semconv as sc
from switchyard.schemas.routing import deployment_id
from switchyard.stack.natsconf import MAX_PAYLOAD
from switchyard.stack.process import ManagedProcess
from tests.conftest import SESSION_MAX_ANSWER_BYTES
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

OVER_KIB = MAX_PAYLOAD // 1024 + 512  # past max_payload by half a MiB: sent in parts
OVER_CAP_KIB = SESSION_MAX_ANSWER_BYTES // 1024 + 512  # past what the edges take
UNDER_KIB = MAX_PAYLOAD // 1024 - 1024  # a MiB under it: still one message
ERROR_MIB = 256  # a provider's (or a proxy's) error page
ROUTES = {
    # Two deployments: a failure worth retrying would be tried on the second.
    "large-over": {
        "deployments": [
            {"provider": "fake", "model": f"bigchunk:{OVER_CAP_KIB}"},
            {"provider": "fake", "model": f"bigchunk:{OVER_CAP_KIB + 1}"},
        ]
    },
    "large-parts": {"deployments": [{"provider": "fake", "model": f"bigchunk:{OVER_KIB}"}]},
    "large-under": {"deployments": [{"provider": "fake", "model": f"bigchunk:{UNDER_KIB}"}]},
    "large-error": {"deployments": [{"provider": "fake", "model": f"hugeerror:{ERROR_MIB}"}]},
    # A server that ignores ``stream: true``: its whole answer is read as the stream's.
    "large-ignores-stream": {
        "deployments": [{"provider": "fake", "model": f"bigwhole:{OVER_KIB}"}]
    },
    # Without a Content-Length: refused once what was read passes the bound.
    "large-chunked": {"deployments": [{"provider": "fake", "model": f"bigchunked:{OVER_KIB * 4}"}]},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def routed(stack: Stack) -> AsyncIterator[Stack]:
    async with stack.live_routes(ROUTES):
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:
            while True:  # every head and model-proxy follows the table on its own
                probe = await _chat(http, stack, "large-under")
                if probe.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        assert probe.status_code == 200, probe.text
        yield stack


async def _chat(http: httpx.AsyncClient, stack: Stack, model: str) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "big"}]},
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_an_answer_too_large_for_the_bus_is_a_clear_413_tried_nowhere_else(
    routed: Stack, upstream: FakeOpenAI
) -> None:
    before = sum(len(upstream.calls_for(d["model"])) for d in ROUTES["large-over"]["deployments"])
    deployments = [deployment_id("fake", d["model"]) for d in ROUTES["large-over"]["deployments"]]
    errors_before = _provider_errors(await routed.modelproxy_samples(), deployments)
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=60) as http:
        over = await _chat(http, routed, "large-over")
        chunked = await _chat(http, routed, "large-chunked")
        under = await _chat(http, routed, "large-under")
        parts = await _chat(http, routed, "large-parts")
    assert over.status_code == 413, over.text[:300]  # a 502 every SDK retried, each billed
    assert over.headers["x-should-retry"] == "false", over.headers
    error = over.json()["error"]
    assert error["code"] == "answer_too_large", error
    assert "MiB" in error["message"]
    assert "more than the 24.0 MiB a whole answer may be" in error["message"], error
    assert "stream it" in error["message"]
    assert chunked.status_code == 413, chunked.text[:300]
    assert chunked.json()["error"]["code"] == "answer_too_large"
    assert "is more than the" in chunked.json()["error"]["message"]  # not read to its end
    after = sum(len(upstream.calls_for(d["model"])) for d in ROUTES["large-over"]["deployments"])
    assert after == before + 1  # not tried on the route's other deployment
    # Nor counted as the deployment failing: the provider did its job (it was).
    errors_after = _provider_errors(await routed.modelproxy_samples(), deployments)
    assert errors_after == errors_before
    # The model-proxy serves on, and an answer under the bound arrives whole.
    assert under.status_code == 200, under.text[:300]
    content = under.json()["choices"][0]["message"]["content"]
    assert content == "x" * (UNDER_KIB * 1024)
    # One past what one message carries comes whole, in parts (it was a 413 too).
    assert parts.status_code == 200, parts.text[:300]
    assert parts.json()["choices"][0]["message"]["content"] == "x" * (OVER_KIB * 1024)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_streamed_request_answered_whole_past_one_message_is_a_billed_413(
    routed: Stack,
) -> None:
    """Parts are for whole answers only: a streamed request's provider that answers with one
    JSON past one message (it ignores ``stream: true``) is read no further than one message,
    as before parts. Read up to the edge's parts cap, its one chunk was larger than a message
    can be: nats-py's MaxPayloadError, a 500 and no bill."""
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=60) as http:
        got = await http.post(
            "/v1/chat/completions",
            json={
                "model": "large-ignores-stream",
                "messages": [{"role": "user", "content": "big"}],
                "stream": True,
            },
            headers={"Authorization": f"Bearer {routed.api_key}", "X-Request-Id": "big-stream"},
        )
    assert got.status_code == 413, got.text[:300]
    assert got.json()["error"]["code"] == "answer_too_large", got.text[:300]
    event = await routed.usage_of("big-stream")
    assert event is not None, "not billed"
    assert event.status == 413


def _provider_errors(samples: list[tuple[str, dict[str, str], float]], deps: list[str]) -> float:
    """``switchyard_provider_errors_total`` of ``deps``, summed over the model-proxies."""
    return sum(
        v
        for name, labels, v in samples
        if name == sc.PROVIDER_ERRORS and labels.get("deployment") in deps
    )


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.asyncio(loop_scope="session")
async def test_a_huge_error_page_is_not_read_whole(routed: Stack) -> None:
    """Only its start is read (all the message comes from): a 256 MiB error page was read
    whole into the model-proxy's memory before it answered."""
    pids = [p.proc.pid for p in _modelproxies(routed) if p.proc is not None]
    before = [_peak_rss_kib(pid) for pid in pids]
    async with httpx.AsyncClient(base_url=routed.tail_url, timeout=60) as http:
        failed = await _chat(http, routed, "large-error")
    assert failed.status_code == 502, failed.text[:300]
    assert "500" in failed.json()["error"]["message"]
    grown = max(_peak_rss_kib(pid) - was for pid, was in zip(pids, before, strict=True))
    assert grown < 64 * 1024, f"a model-proxy's peak memory grew by {grown} KiB"


def _modelproxies(stack: Stack) -> list[ManagedProcess]:
    return [
        proc
        for phase in stack.supervisor.procs
        for proc in phase
        if proc.spec.name.startswith("modelproxy")
    ]
