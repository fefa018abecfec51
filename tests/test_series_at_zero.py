"""The series rate() and increase() read exist at 0 before their first count.

Prometheus (2.42, without created-timestamp handling) takes the first value it scrapes of a
series as its start: a series born with 10 requests in it counts 0 of them. An SRE explorer
saw a new route's first 10 requests count 0 in the alias and deployment rates, the dashboard's
24 h spend read $16.43 where the spend endpoints said $19.35, the 429 share read 0.044 for a
real 20% (the budget_exceeded series was new) and the Vault and limits alerts' increase() miss
failures whose label first appeared in the outage. Processes that hold the route table create
its aliases' and deployments' series when they load or change it; the edges (no route table)
create an alias's refusal classes once a request of it was served; bounded outcome labels
(refusal reasons, Vault results) exist from the start.

Its own stack: the counts are this module's alone.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from switchyard.client import LLMClient
from switchyard.errors import AuthenticationFailed
from switchyard.runtime import semconv as sc
from switchyard.schemas.routing import deployment_id
from tests.opspack import run_prometheus
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Samples = list[tuple[str, dict[str, str], float]]
ECHO = deployment_id("fake", "echo")
SPARE = deployment_id("fake", "spare")
PROMETHEUS = shutil.which("prometheus")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def zeroed(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {
            "m": {"deployments": [{"provider": "fake", "model": "echo"}]},
            "backup": {
                "deployments": [{"provider": "fake", "model": "spare"}],
                "fallbacks": ["m"],
            },
        },
    }
    stack = await start_stack(tmp_path_factory.mktemp("zeroed"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of samples ``name`` with ``labels`` over the processes scraped (two
    model-proxies, say), or None when none has such a series."""
    found = [
        v
        for n, got, v in samples
        if n == name and all(got.get(k) == want for k, want in labels.items())
    ]
    return sum(found) if found else None


async def test_the_table_s_deployments_and_aliases_have_their_series_before_any_request(
    zeroed: Stack,
) -> None:
    proxy = await zeroed.samples("modelproxy")
    for dep in (ECHO, SPARE):
        calls = f"{sc.CLIENT_OPERATION_DURATION}_count"
        assert _value(proxy, calls, deployment=dep, error_type="") == 0
        for kind in ("input", "output"):
            tokens = f"{sc.CLIENT_TOKEN_USAGE}_sum"
            assert _value(proxy, tokens, deployment=dep, gen_ai_token_type=kind) == 0
        assert _value(proxy, sc.PROVIDER_ERRORS, deployment=dep, error_type="provider_error") == 0
        limited = _value(
            proxy, sc.PROVIDER_ERRORS, deployment=dep, error_type="rate_limit_exceeded"
        )
        assert limited == 0
    accounting = await zeroed.samples("accounting")
    for alias in ("m", "backup"):
        assert _value(accounting, sc.SPEND, alias=alias) == 0
    head = await zeroed.samples("head")
    assert _value(head, sc.COOLDOWNS_STARTED, deployment=SPARE) == 0
    assert _value(head, sc.FALLBACKS, alias="backup", fallback="m") == 0
    secrets = await zeroed.samples("secrets")
    assert _value(secrets, sc.VAULT_REQUESTS, op="get", result="vault_unavailable") == 0
    tail = await zeroed.samples("tail")
    assert _value(tail, sc.REFUSALS, reason="budget") == 0
    assert _value(tail, sc.REFUSALS, reason="rpm") == 0


async def test_a_route_added_to_the_live_table_has_its_series_before_its_first_request(
    zeroed: Stack,
) -> None:
    new = deployment_id("fake", "fresh")
    route = {"deployments": [{"provider": "fake", "model": "fresh"}]}
    async with zeroed.live_routes({"fresh-alias": route}):
        deadline = time.monotonic() + 15
        while True:
            proxy = await zeroed.samples("modelproxy")
            accounting = await zeroed.samples("accounting")
            calls = _value(
                proxy, f"{sc.CLIENT_OPERATION_DURATION}_count", deployment=new, error_type=""
            )
            spend = _value(accounting, sc.SPEND, alias="fresh-alias")
            if calls == 0 and spend == 0:
                break
            assert time.monotonic() < deadline, (calls, spend)
            await asyncio.sleep(0.2)


async def test_a_route_added_to_the_live_table_has_its_edge_series_before_its_first_request(
    zeroed: Stack,
) -> None:
    """An edge holds no route table: it asks a head for the aliases (ingress.alias_watch) and
    creates their request series, with the refusal classes, at 0."""
    route = {"deployments": [{"provider": "fake", "model": "fresh"}]}
    count = f"{sc.SERVER_REQUEST_DURATION}_count"
    async with zeroed.live_routes({"edge-fresh": route}):
        deadline = time.monotonic() + 15
        while True:
            tail = await zeroed.samples("tail")
            served = _value(tail, count, gen_ai_request_model="edge-fresh", error_type="")
            if served == 0:
                break
            assert time.monotonic() < deadline, served
            await asyncio.sleep(0.2)
    for error_type in ("budget_exceeded", "rate_limit_exceeded", "limits_unavailable"):
        assert _value(tail, count, gen_ai_request_model="edge-fresh", error_type=error_type) == 0


async def test_a_head_lists_every_alias_to_an_edge_asking_for_itself_and_no_one_else(
    zeroed: Stack,
) -> None:
    """What the edges' alias watch asks: a model list with no client's key. An edge's NATS
    identity gets the whole table's aliases; an internal client without a key, a 401."""
    edge = await zeroed.connect("tail")
    try:
        async with LLMClient(edge) as llm:
            assert {"m", "backup"} <= set(await llm.models())
    finally:
        await edge.close()
    app = await zeroed.connect("app")
    try:
        async with LLMClient(app) as llm:
            with pytest.raises(AuthenticationFailed):
                await llm.models()
    finally:
        await app.close()


async def test_an_alias_served_once_has_its_refusal_classes_at_zero_on_the_edge(
    zeroed: Stack,
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {zeroed.api_key}"}
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(f"{zeroed.tail_url}/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    tail = await zeroed.samples("tail")
    count = f"{sc.SERVER_REQUEST_DURATION}_count"
    assert _value(tail, count, gen_ai_request_model="m", error_type="") == 1
    for error_type in ("budget_exceeded", "rate_limit_exceeded", "limits_unavailable"):
        assert _value(tail, count, gen_ai_request_model="m", error_type=error_type) == 0


@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"
)
async def test_prometheus_counts_a_new_route_s_first_burst(zeroed: Stack, tmp_path: Path) -> None:
    """The explorer's case, in a real Prometheus 2.42 scraping every second: a route added to
    the live table gets 10 requests in one go; increase() over the model-proxies' calls and
    tokens counted 0 of them (the series were born with the burst in them), now all 10. So
    does the edge's request count: an edge holds no route table, and learns the aliases from
    a head (ingress.alias_watch); before, its series were born with the burst too."""
    assert PROMETHEUS is not None
    targets = []
    for phase in zeroed.supervisor.procs:
        for proc in phase:
            url = proc.spec.health_url or ""
            named = proc.spec.name.startswith(("modelproxy", "accounting", "tail"))
            if named and url.startswith("http"):
                targets.append(urlsplit(url).netloc)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "zeroed", "static_configs": [{"targets": targets}]}],
    }
    dep = deployment_id("fake", "burst")
    async with run_prometheus(PROMETHEUS, config, tmp_path) as prom:

        async def all_up() -> bool:
            active = (await prom.get("targets"))["activeTargets"]
            return len([t for t in active if t["health"] == "up"]) == len(targets)

        await prom.until(all_up)
        route = {"deployments": [{"provider": "fake", "model": "burst"}]}
        served = f'{sc.SERVER_REQUEST_DURATION}_count{{gen_ai_request_model="burst",error_type=""}}'
        async with zeroed.live_routes({"burst": route}):
            await asyncio.sleep(3)  # the table reaches every process; a few scrapes pass

            async def edge_at_zero() -> bool:  # the edge's series scraped before the burst
                return bool(await prom.query(f"sum({served})"))

            await prom.until(edge_at_zero)
            body = {"model": "burst", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"Authorization": f"Bearer {zeroed.api_key}"}
            async with httpx.AsyncClient(timeout=30) as http:
                answers = await asyncio.gather(
                    *(
                        http.post(
                            f"{zeroed.tail_url}/v1/chat/completions", json=body, headers=headers
                        )
                        for _ in range(10)
                    )
                )
            assert [a.status_code for a in answers] == [200] * 10
            calls = f'{sc.CLIENT_OPERATION_DURATION}_count{{deployment="{dep}",error_type=""}}'
            tokens = f'{sc.CLIENT_TOKEN_USAGE}_sum{{deployment="{dep}"}}'

            async def scraped_all() -> bool:  # Prometheus has the 10 in its latest samples
                found = await prom.query(f"sum({calls})")
                return bool(found) and float(found[0]["value"][1]) == 10

            await prom.until(scraped_all)
            await asyncio.sleep(2.5)  # more samples after the burst: increase() has a range
            [counted] = await prom.query(f"sum(increase({calls}[1m]))")
            assert float(counted["value"][1]) >= 9.5, counted
            [billed] = await prom.query(f"sum(increase({tokens}[1m]))")
            assert float(billed["value"][1]) > 0, billed
            [answered] = await prom.query(f"sum(increase({served}[1m]))")
            assert float(answered["value"][1]) >= 9.5, answered
