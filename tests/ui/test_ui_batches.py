"""The Batches page: a running batch's progress (the page reloads itself while one runs), then
the same batch completed, and the status filter."""

from __future__ import annotations

import asyncio
import time

import anthropic
import pytest

from tests.ui.conftest import Browser
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_running_batch_shows_its_progress_then_its_end(
    web: Browser, upstream: FakeOpenAI
) -> None:
    stack = web.stack
    key, record = await stack.new_key("batch-ui", team="research")
    upstream.set_mode("held", "gate:ui-batch")  # the first request waits at the provider
    requests = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "held",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"q{i}"}],
            },
        }
        for i in range(4)
    ]
    async with anthropic.AsyncAnthropic(base_url=stack.tail_url, api_key=key) as client:
        try:
            batch = await client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
            await web.sign_in()
            await web.goto("/ui/batches?status=running")
            row = web.page.locator("tr", has_text=batch.id)
            assert await row.count() == 1
            text = await row.inner_text()
            assert "Anthropic messages" in text
            assert "batch-ui" in text  # the key's name, linked to the key
            assert "0 / 4" in text
            assert await row.locator(".badge").inner_text() in ("validating", "in_progress")
            refresh = web.page.locator('meta[http-equiv="refresh"]')
            assert await refresh.get_attribute("content") == "5"
            await web.shot("batches-running")
        finally:
            upstream.open_gate("ui-batch")
        deadline = time.monotonic() + 60
        while (await client.messages.batches.retrieve(batch.id)).processing_status != "ended":
            assert time.monotonic() < deadline, "the batch did not end"
            await asyncio.sleep(0.3)
    await web.goto("/ui/batches")
    row = web.page.locator("tr", has_text=batch.id)
    assert await row.locator(".badge").inner_text() == "completed"
    assert "4 / 4" in await row.inner_text()
    assert await web.page.locator('meta[http-equiv="refresh"]').count() == 0
    assert await row.get_by_role("link", name="batch-ui").get_attribute("href") == (
        f"/ui/keys/{record.id}"
    )
    await web.shot("batches")
    await web.goto("/ui/batches?status=running")
    assert await web.page.locator("tr", has_text=batch.id).count() == 0
    assert "No running batch." in await web.page.locator("table.data").inner_text()
