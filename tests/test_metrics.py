"""Every process serves Prometheus metrics that count exactly what happened; queue depth is
visible per deployment in metrics and the admin API, live.

Its own stack, so the counts are this module's alone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from switchyard.runtime import semconv as sc
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack, start_stack
from tests.support import pause
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Samples = list[tuple[str, dict[str, str], float]]
HELD = deployment_id("fake", "ctl:held")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def watched(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
        },
        "routes": {
            "m": {"deployments": [{"provider": "fake", "model": "echo"}]},
            "held": {"deployments": [{"provider": "fake", "model": "ctl:held", "concurrency": 1}]},
            "broken": {"deployments": [{"provider": "fake", "model": "status:500"}]},
        },
    }
    stack = await start_stack(tmp_path_factory.mktemp("metrics"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _targets(stack: Stack) -> dict[str, str]:
    """Every Switchyard process and its /metrics URL (edges: HTTP port; workers: health port)."""
    out = {}
    for phase in stack.supervisor.procs:
        for proc in phase:
            url = proc.spec.health_url or ""
            if proc.spec.kind == "component" and url.startswith("http"):
                out[proc.spec.name] = url.rsplit("/", 1)[0] + "/metrics"
    return out


async def _scrape(stack: Stack) -> dict[str, Samples]:
    out: dict[str, Samples] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for name, url in _targets(stack).items():
            resp = await http.get(url)
            assert resp.status_code == 200, (name, resp.text)
            assert resp.headers["content-type"].startswith("text/plain")
            out[name] = [
                (sample.name, dict(sample.labels), sample.value)
                for family in text_string_to_metric_families(resp.text)
                for sample in family.samples
            ]
    return out


def _total(scrape: dict[str, Samples], name: str, **labels: str) -> float:
    return sum(
        value
        for samples in scrape.values()
        for sample, found, value in samples
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    )


def _chat(stack: Stack, model: str, text: str, *, stream: bool) -> dict[str, Any]:
    return {
        "url": f"{stack.tail_url}/v1/chat/completions",
        "json": {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
            **({"stream_options": {"include_usage": True}} if stream else {}),
        },
        "headers": {"Authorization": f"Bearer {stack.api_key}"},
    }


async def test_every_process_counts_exactly_what_it_served(
    watched: Stack, upstream: FakeOpenAI
) -> None:
    before = await _scrape(watched)
    assert set(before) >= {"tail", "gateway", "secrets", "control", "accounting"}
    for name, samples in before.items():  # each process says what it is
        builds = [s for s in samples if s[0] == sc.BUILD_INFO]
        assert builds, name
        assert any(s[0] == "process_cpu_seconds_total" for s in samples), name

    texts = ["one two", "three", "four five six", "seven"]
    streamed = ["a b c", "d e", "f"]
    async with httpx.AsyncClient(timeout=30) as http:
        for text in texts:
            resp = await http.post(**_chat(watched, "m", text, stream=False))
            assert resp.status_code == 200, resp.text
        for text in streamed:
            resp = await http.post(**_chat(watched, "m", text, stream=True))
            assert resp.status_code == 200, resp.text
        auth = {"Authorization": f"Bearer {watched.api_key}"}
        for path in ("/v1/models", "/v1/models", "/v1/models/m", "/v1/batches"):
            resp = await http.get(f"{watched.tail_url}{path}", headers=auth)
            assert resp.status_code == 200, resp.text
    n = len(texts) + len(streamed)
    # What the provider reported: 7 prompt tokens, one completion token per word of "echo: ...".
    output = sum(len(f"echo: {t}".split()) for t in texts + streamed)
    await asyncio.sleep(0.2)
    after = await _scrape(watched)

    def delta(name: str, **labels: str) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    chat = {sc.OPERATION: "chat"}
    assert delta(sc.HTTP_REQUESTS, route="/v1/chat/completions", status="200") == n
    # The edge's own routes are labelled with their templates, not _OTHER.
    assert delta(sc.HTTP_REQUESTS, route="/v1/models", method="GET", status="200") == 2
    assert delta(sc.HTTP_REQUESTS, route="/v1/models/{model:path}", status="200") == 1
    assert delta(sc.HTTP_REQUESTS, route="/v1/batches", method="GET", status="200") == 1
    assert delta(sc.HTTP_REQUESTS, route=sc.OTHER, method="GET") == 0
    assert delta(f"{sc.SERVER_REQUEST_DURATION}_count", **chat, gen_ai_request_model="m") == n
    assert delta(f"{sc.SERVER_TIME_TO_FIRST_TOKEN}_count", **chat) == len(streamed)
    assert delta(f"{sc.CLIENT_OPERATION_DURATION}_count", **chat, error_type="") == n
    assert delta(f"{sc.CLIENT_TIME_TO_FIRST_CHUNK}_count", **chat) == len(streamed)
    tokens = sc.CLIENT_TOKEN_USAGE
    assert delta(f"{tokens}_count", gen_ai_token_type="output") == n
    assert delta(f"{tokens}_sum", gen_ai_token_type="output") == output
    assert delta(f"{tokens}_sum", gen_ai_token_type="input") == 7 * n
    provider = {sc.PROVIDER: "openai-compatible", sc.REQUEST_MODEL: "echo"}
    assert delta(f"{tokens}_count", **provider, gen_ai_token_type="input") == n
    # Refusals are counted by reason, and a bad key's model never becomes a label.
    async with httpx.AsyncClient(timeout=30) as http:
        bad = _chat(watched, "nonexistent-model-x", "x", stream=False)
        bad["headers"] = {"Authorization": "Bearer sk-sy-wrong"}
        assert (await http.post(**bad)).status_code == 401
    final = await _scrape(watched)
    refused = _total(final, sc.REFUSALS, reason="auth") - _total(after, sc.REFUSALS, reason="auth")
    assert refused == 1
    labels = [found for samples in final.values() for _, found, _ in samples]
    assert not any("nonexistent-model-x" in found.values() for found in labels)


async def _queue(stack: Stack) -> dict[str, float]:
    scrape = await _scrape(stack)
    return {
        "waiting": _total(scrape, sc.QUEUE_WAITING, deployment=HELD),
        "in_flight": _total(scrape, sc.QUEUE_IN_FLIGHT, deployment=HELD),
        "oldest": _total(scrape, sc.QUEUE_OLDEST_AGE, deployment=HELD),
        "concurrency": _total(scrape, sc.QUEUE_CONCURRENCY, deployment=HELD),
    }


async def _api_queue(stack: Stack) -> dict[str, Any]:
    resp = await stack.admin("GET", "/deployments")
    assert resp.status_code == 200, resp.text
    return next(d for d in resp.json()["deployments"] if d["id"] == HELD)["queue"]


async def _top_queue(stack: Stack) -> dict[str, Any]:
    """The held deployment's queue as ``switchyard top --once --json`` prints it (a real CLI
    process with the stack's config, as an operator runs it), with the overview's time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchyard",
        "--config",
        str(stack.config_file),
        "top",
        "--once",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    assert token not in out.decode() + err.decode()
    doc = json.loads(out)
    queue: dict[str, Any] = next(d for d in doc["deployments"] if d["id"] == HELD)["queue"]
    return {**queue, "at": doc["at"]}


async def _until(check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value is not None:
            return value
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.1)


async def test_a_hung_deployment_shows_one_in_flight_and_the_rest_waiting(
    watched: Stack, upstream: FakeOpenAI
) -> None:
    upstream.set_mode("held", "gate:held")
    waits_before = _long_waits(await _scrape(watched))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=50)) as http:
        requests = [
            asyncio.ensure_future(http.post(**_chat(watched, "held", f"q{i}", stream=False)))
            for i in range(20)
        ]
        began = time.monotonic()

        async def depth_seen() -> dict[str, float] | None:
            q = await _queue(watched)
            return q if (q["in_flight"], q["waiting"]) == (1, 19) else None

        first = await _until(depth_seen, 4)
        api_seen = await _until(lambda: _expect(_api_queue(watched), in_flight=1, waiting=19), 2)
        assert time.monotonic() - began < 4  # 2 s from the last request plus sending them all
        assert first["concurrency"] == 1
        assert api_seen["concurrency"] == 1
        assert api_seen["limit"] > 0
        # `switchyard top` shows the same on its first read, from a snapshot taken after it was
        # started (the CLI process itself takes 1-2 s to start on this 2-core machine, more when
        # it is busy, so the bound is on the snapshot, not on the process).
        launched_at = time.time()
        top_seen = await _top_queue(watched)
        assert top_seen["at"] >= launched_at
        assert (top_seen["in_flight"], top_seen["waiting"], top_seen["concurrency"]) == (1, 19, 1)
        assert top_seen["oldest_wait_s"] > 0
        await asyncio.sleep(1.5)
        later = await _queue(watched)
        assert later["oldest"] > first["oldest"]  # the oldest waiting request keeps aging
        # The call hung at the provider shows its age (top showed only `1/1` in flight). The
        # age comes from the model-proxy's heartbeat (a beat a second while it serves), which
        # top's first read above may precede: read again now that the call is 1.5 s old.
        assert (await _top_queue(watched))["oldest_in_flight_s"] > 0

        async def aged() -> dict[str, Any] | None:
            queue = await _api_queue(watched)
            return queue if queue["oldest_in_flight_s"] >= 1.5 else None

        await _until(aged, 5)
        upstream.open_gate("held")
        answers = await asyncio.gather(*requests)
    assert [r.status_code for r in answers] == [200] * 20
    # The 19 behind the first waited over a second and a half before the gate opened, most of
    # it held for fair order (a saturated deployment): their queue wait says so.
    assert _long_waits(await _scrape(watched)) - waits_before >= 19

    async def drained() -> dict[str, float] | None:
        q = await _queue(watched)
        return q if (q["in_flight"], q["waiting"], q["oldest"]) == (0, 0, 0) else None

    await _until(drained, 5)
    await _until(lambda: _expect(_api_queue(watched), in_flight=0, waiting=0), 3)
    await _until(lambda: _expect(_top_queue(watched), in_flight=0, waiting=0), 6)


def _long_waits(scrape: dict[str, Samples]) -> float:
    """How many requests of the held deployment waited in its queue for over a second."""
    name = f"{sc.QUEUE_WAIT}_bucket"
    return _total(scrape, f"{sc.QUEUE_WAIT}_count", deployment=HELD) - _total(
        scrape, name, deployment=HELD, le="1.0"
    )


async def _expect(reading: Any, **wanted: int) -> dict[str, Any] | None:
    value = await reading
    return value if all(value[k] == v for k, v in wanted.items()) else None


async def test_the_overview_and_its_stream_show_processes_and_traffic(watched: Stack) -> None:
    resp = await watched.admin("GET", "/overview")
    assert resp.status_code == 200, resp.text
    overview = resp.json()
    components = {p["component"] for p in overview["processes"]}
    assert components >= {"tail", "gateway", "head", "modelproxy", "secrets", "control"}
    assert all(p["healthy"] for p in overview["processes"]), overview["processes"]
    assert all(p["rss_bytes"] > 0 for p in overview["processes"])
    assert {d["id"] for d in overview["deployments"]} >= {HELD}
    assert overview["spend_today_usd"] is not None
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "GET", f"{watched.gateway_url}/admin/v1/stream", headers=watched.admin_headers()
        ) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = 0
        async for line in stream.aiter_lines():
            if line.startswith("event: overview"):
                events += 1
            if events == 2:
                break
    assert events == 2
    history = (await watched.admin("GET", "/deployments/history?seconds=60")).json()
    assert history["seconds"] == 60
    assert HELD in history["deployments"]


async def test_a_deployment_s_error_share_counts_its_failures_not_its_clients_mistakes(
    watched: Stack,
) -> None:
    """Found using ``switchyard top``: a few malformed Anthropic requests (rejected with 400
    by the model-proxy, which translates them) showed a healthy deployment at 73% errors in red,
    while the header, counting the edges' 5xx, said 0%."""
    echo, broken = deployment_id("fake", "echo"), deployment_id("fake", "status:500")
    headers = {"x-api-key": watched.api_key, "anthropic-version": "2023-06-01"}
    bad = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [1]}]}
    async with httpx.AsyncClient(timeout=30) as http:
        failed = await http.post(**_chat(watched, "broken", "x", stream=False))  # retried first
        assert failed.status_code >= 500, failed.text
        for _ in range(6):
            got = await http.post(f"{watched.tail_url}/v1/messages", json=bad, headers=headers)
            assert got.status_code == 400, got.text
        for i in range(2):
            assert (await http.post(**_chat(watched, "m", f"ok{i}", stream=False))).is_success

    async def both_seen() -> dict[str, Any] | None:
        overview = (await watched.admin("GET", "/overview")).json()
        rates = {d["id"]: d["rates"] for d in overview["deployments"]}
        seen = rates.get(echo, {}).get("requests_per_s", 0) >= 0.8  # 8 in the 10 s window
        return rates if seen and rates.get(broken, {}).get("requests_per_s", 0) > 0 else None

    rates = await _until(both_seen, 5)
    assert rates[echo]["error_ratio"] == 0.0, rates[echo]
    assert rates[broken]["error_ratio"] == 1.0, rates[broken]


async def test_a_stuck_accounting_shows_as_usage_waiting_and_stalled(watched: Stack) -> None:
    """Spend and budgets move only when accounting applies usage: one stopped (SIGSTOP, as a
    hung process) shows in control's metrics as batches waiting and seconds stalled, and both
    fall back to 0 once it runs again (an explorer's stopped accounting had no signal but
    ``process_up``)."""

    async def usage() -> tuple[float, float]:
        samples = await watched.samples("control")
        found = {name: value for name, _labels, value in samples}
        return found[sc.USAGE_WAITING], found[sc.USAGE_STALLED]

    assert await usage() == (0.0, 0.0)
    accounting = watched.process("accounting").proc
    assert accounting is not None
    await pause(accounting.pid)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for i in range(3):
                resp = await http.post(**_chat(watched, "m", f"unbilled {i}", stream=False))
                assert resp.status_code == 200, resp.text

        async def stalled() -> tuple[float, float] | None:
            waiting, seconds = await usage()
            return (waiting, seconds) if waiting >= 1 and seconds >= 2 else None

        waiting, seconds = await _until(stalled, 15)
        assert waiting <= 3  # one batch per request at most
        assert seconds < 15
    finally:
        accounting.send_signal(signal.SIGCONT)

    async def caught_up() -> tuple[float, float] | None:
        state = await usage()
        return state if state == (0.0, 0.0) else None

    await _until(caught_up, 15)
