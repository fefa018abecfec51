"""The spend metric after a Valkey stall: accounting's RECORD call times out while Valkey is
stopped, Valkey runs it once it resumes, and the retry finds the batch applied. The stored spend
was right; the metric never counted that batch (an explorer: $0.247 counted of $0.260)."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from switchyard.limits.store import PATIENT_CALL_S
from tests.stacks import Stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

ALIAS = "stall-priced"
PRICE = {"input_per_token": 0.001, "output_per_token": 0.001}


async def _metric(stack: Stack) -> float:
    return sum(
        value
        for name, labels, value in await stack.samples("accounting")
        if name == "switchyard_spend_usd_total" and ALIAS in labels.values()
    )


async def _stored(stack: Stack, key_id: str) -> float:
    resp = await stack.admin("GET", f"/keys/{key_id}")
    spend = resp.json()["spend"]
    return float(spend["total_spend_usd"]) if spend else -1.0


async def test_a_batch_applied_during_a_valkey_stall_is_counted_in_the_metric(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    route = {"deployments": [{"provider": "fake", "model": "echo", "price": PRICE}]}
    assert (await stack.admin("PUT", f"/routes/{ALIAS}", route)).status_code == 200
    api_key, record = await stack.new_key("stall-metric")  # no limits: the edge needs no Valkey
    valkey = stack.process("valkey").proc
    assert valkey is not None
    try:
        async with httpx.AsyncClient(base_url=stack.tail_url, timeout=30) as http:

            async def chat(text: str) -> None:
                deadline = time.monotonic() + 30
                while True:  # (the heads may not have seen the new route yet)
                    resp = await http.post(
                        "/v1/chat/completions",
                        json={"model": ALIAS, "messages": [{"role": "user", "content": text}]},
                        headers={"Authorization": f"Bearer {api_key}"},
                    )
                    if resp.status_code != 404 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert resp.status_code == 200, resp.text

            await chat("before the stall")
            async with asyncio.timeout(30):  # billed and counted
                while await _stored(stack, record.id) <= 0 or await _metric(stack) <= 0:
                    await asyncio.sleep(0.2)
            metric_before = await _metric(stack)
            stored_before = await _stored(stack, record.id)
            valkey.send_signal(signal.SIGSTOP)
            try:
                for i in range(3):
                    await chat(f"during the stall {i}")
                # accounting sends RECORD into the stall and gives up on it (a patient call,
                # then its one immediate retry)
                await asyncio.sleep(2 * max(PATIENT_CALL_S, stack.settings.redis.timeout_s) + 2)
            finally:
                valkey.send_signal(signal.SIGCONT)
        async with asyncio.timeout(60):
            while True:
                stored = await _stored(stack, record.id) - stored_before
                counted = await _metric(stack) - metric_before
                if stored > 0 and abs(counted - stored) < 1e-9:
                    break
                await asyncio.sleep(0.3)
        assert stored == pytest.approx(counted)
    finally:
        valkey.send_signal(signal.SIGCONT)
        await stack.admin("DELETE", f"/routes/{ALIAS}")
