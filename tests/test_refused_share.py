"""Refusals reach the operator: requests a real stack answers 429 show as the refused share of
the overview that ``switchyard top`` and the admin Overview read (``GET /admin/v1/overview``).

The session stack, as tests/test_retry_after.py uses it for its exhausted answers: a key
limited to 2 requests a minute is refused (429 ``rate_limit_exceeded``) by the tail, which
counts every answer by status class in its heartbeat; the control service turns the beats into
the totals. An overloaded platform looked healthy before: 0% errors (5xx only) and a low
latency (from dispatch), while most requests were refused.
"""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import pytest
from rich.console import Console

from switchyard.schemas.monitor import Overview
from switchyard.schemas.secret import Secret
from switchyard.top import Target, fetch_overview, frame
from tests.stacks import Stack

pytestmark = pytest.mark.integration

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def _known(http: httpx.AsyncClient, stack: Stack, key: str) -> None:
    """Wait until the tail knows ``key`` (it arrives through KV, not at once)."""
    until = time.monotonic() + 10
    while time.monotonic() < until:
        resp = await http.get(f"{stack.tail_url}/v1/models", headers=_auth(key))
        if resp.status_code != 401:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the tail never learned the new key")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_429s_through_the_stack_show_as_the_refused_share_top_and_the_overview_read(
    stack: Stack,
) -> None:
    key, _ = await stack.new_key("refused-share", rpm=2)
    target = Target(
        url=stack.gateway_url,
        token=Secret(stack.admin_headers()["Authorization"].removeprefix("Bearer ")),
        token_file=stack.settings.admin_token_file,
    )
    url = f"{stack.tail_url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as http:
        await _known(http, stack, key)
        answers = [
            (await http.post(url, json=BODY, headers=_auth(key))).status_code for _ in range(12)
        ]
        assert answers.count(429) >= 10, answers  # 2 a minute: the rest refused
        bad_key = await http.post(url, json=BODY, headers=_auth("sk-not-a-key"))
        assert bad_key.status_code == 401  # the client's mistake: neither error nor refusal
        # What `switchyard top` reads, as it reads it; the edges report every second.
        overview: Overview | None = None
        until = time.monotonic() + 15
        while time.monotonic() < until:
            overview, _ = await fetch_overview(http, target)
            if overview.totals.refused_ratio:
                break
            await asyncio.sleep(0.2)
    assert overview is not None
    refused = overview.totals.refused_ratio
    assert refused is not None
    assert refused > 0, overview.totals
    # Every deployment row: unknown, not 0 (a refusal never reaches a model-proxy).
    assert {d.rates.refused_ratio for d in overview.deployments} == {None}
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(frame(overview, url=stack.gateway_url))
    assert f"refused {refused:.1%}" in console.export_text()
    # The admin Overview reads the same document (switchyard.admin.overview).
    page = (await stack.admin("GET", "/overview")).json()
    assert page["totals"]["refused_ratio"] > 0, page["totals"]
