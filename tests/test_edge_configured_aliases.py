"""An edge that no head has answered yet (none running since it started, or heads too old to
list the route table's aliases to it) labels the requests of the aliases in its own settings'
route table with their alias, and has their chat series at 0 from its start: it labelled them
``_OTHER`` (as any client-made name) until one of them was served. A name that is in no table
the edge knows still takes no label of its own. A tail alone, no head."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from switchyard.runtime import semconv as sc
from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration

DURATION = f"{sc.SERVER_REQUEST_DURATION}_count"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def headless(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    extra = {
        "providers": {"fake": {"kind": "openai-compatible", "api_base": upstream.base_url}},
        "routes": {"configured": {"deployments": [{"provider": "fake", "model": "echo"}]}},
    }
    stack = await start_stack(
        tmp_path_factory.mktemp("headless"), extra, components=["tail"], wait_ready=False
    )
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _counts(samples: list[tuple[str, dict[str, str], float]]) -> dict[tuple[str, str], float]:
    """Chat request counts by (model label, error type)."""
    return {
        (labels[sc.REQUEST_MODEL], labels[sc.ERROR_TYPE]): value
        for name, labels, value in samples
        if name == DURATION and labels.get(sc.OPERATION) == sc.OPERATIONS["chat"]
    }


async def test_a_configured_alias_is_labelled_before_any_head_answers(headless: Stack) -> None:
    before = _counts(await headless.samples("tail"))
    assert before.get(("configured", "")) == 0, before  # at 0 before its first request
    async with httpx.AsyncClient(timeout=30) as http:
        for model in ("configured", "made-up-name"):
            answer = await http.post(
                f"{headless.tail_url}/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {headless.api_key}"},
            )
            assert answer.status_code == 503, answer.text  # no head
    after = _counts(await headless.samples("tail"))
    failed = {key: n for key, n in after.items() if key[1] and n}
    assert sorted(model for model, _ in failed) == sorted(["configured", sc.OTHER]), after
    assert sum(failed.values()) == 2
    assert not any(model == "made-up-name" for model, _ in after), after
