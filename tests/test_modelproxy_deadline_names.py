"""A bus caller's 504 from a model-proxy says which limit set its deadline, as the head's does.

The head names the limit behind a deadline that passed in the 504s it answers
(tests/test_head_deadline_names.py) and stamps which on the queued request
(``Sy-Deadline-By``). A model-proxy answering the 504 itself (the deadline passed while the
request waited in its deployment's queue, or while the provider worked) said only "the request
deadline passed ...". It names the limit now, for bus callers only (an HTTP edge names its own
limits in its 504: named once). Its own stack: a 2 s default deadline, two attempts per
request, and a deployment that answers 500 with a slow fallback.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import pytest_asyncio

from switchyard.bus import headers as h
from switchyard.bus import replies
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack, start_stack
from tests.support import bus_answer
from tests.upstream import FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULT_S = 2.0
DEFAULT_NAMED = (
    f"(the deadline was the gateway's default ingress.default_deadline_s ({DEFAULT_S:g} s): "
    "the request set no Sy-Deadline"
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def short(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> AsyncIterator[Stack]:
    fake = {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 8}
    extra = {
        "providers": {"fake": fake},
        "routes": {
            "dl-slow": {"deployments": [{"provider": "fake", "model": "slow:6000"}]},
            # A real model-proxy reroutes its 500 to a head, which sends it to the fallback.
            "dl-fails": {
                "deployments": [{"provider": "fake", "model": "status:500"}],
                "fallbacks": ["dl-slow"],
            },
        },
        "ingress": {"default_deadline_s": DEFAULT_S},
        "routing": {"max_attempts": 2},
    }
    stack = await start_stack(tmp_path_factory.mktemp("deadline-names"), extra)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _chat(model: str, text: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _message(reply: replies.Reply) -> str:
    assert (reply.kind, reply.status) == (replies.ReplyKind.ERROR, 504), reply.body
    return str(msgspec.json.decode(reply.body)["error"]["message"])


async def _ask(stack: Stack, model: str, text: str, headers: dict[str, str]) -> replies.Reply:
    nc = await stack.connect("app")
    try:
        auth = {"Authorization": f"Bearer {stack.api_key}"} | headers
        return await bus_answer(nc, _chat(model, text), auth)
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_deadline_that_passes_while_the_provider_works_is_named(short: Stack) -> None:
    """The caller's own Sy-Deadline (3 s; the provider takes 6 s) and the head's default
    (2 s, none sent): the model-proxy's 504 names each."""
    own = str(int((time.time() + 3) * 1000))
    message = _message(await _ask(short, "dl-slow", "own", {h.DEADLINE: own}))
    assert message == (
        "the request deadline passed while the provider worked "
        "(the deadline was the caller's own Sy-Deadline)"
    )
    message = _message(await _ask(short, "dl-slow", "default", {}))
    assert message.startswith("the request deadline passed while the provider worked (the")
    assert DEFAULT_NAMED in message, message


@pytest.mark.asyncio(loop_scope="session")
async def test_a_504_after_a_real_reroute_names_the_limit(short: Stack) -> None:
    """Not a forged reroute (tests/test_head_deadline_names.py copies Sy-Deadline-By into
    one by hand): the first deployment answers 500, its model-proxy hands the request back
    to a head (llm.v1.reroute), which sends it to the fallback (two attempts allowed); the
    deadline (the head's 2 s default) passes there, and the 504 names it: Sy-Deadline-By
    went through the reroute."""
    reply = await _ask(short, "dl-fails", "rerouted", {})
    message = _message(reply)
    assert reply.attempts == 2, reply
    assert reply.deployment == deployment_id("fake", "slow:6000")  # the fallback's
    assert DEFAULT_NAMED in message, message
    assert message.count("(the deadline was") == 1


@pytest.mark.asyncio(loop_scope="session")
async def test_an_edge_504_names_its_limit_once(short: Stack) -> None:
    """An HTTP client's 504 names the edge's limit, once: the model-proxy adds none."""
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{short.tail_url}/v1/chat/completions",
            json=_chat("dl-slow", "edge"),
            headers={"Authorization": f"Bearer {short.api_key}", "X-Request-Timeout": "2"},
        )
    assert resp.status_code == 504, resp.text
    message = resp.json()["error"]["message"]
    assert message.count("(the deadline was") <= 1, message
    assert "Sy-Deadline" not in message, message
