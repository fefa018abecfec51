"""A native stream whose provider reports a failure after its answer began cools its deployment,
and a cooldown records the provider's own status, end to end on the session stack.

Messages to Anthropic and Responses to OpenAI are relayed as the provider sends them. An
``error`` event (or ``response.failed``) after content went out ends the client's stream as
it is, but the deployment was not cooled: it kept its share of traffic while failing every
stream midway. Now the model-proxy cools it as for any stream that failed midway, except for
an error that is the client's (``invalid_request_error``). And a provider's 500 was recorded
as 502 (the status the bus carries for any provider 5xx): the cooldown now says 500.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.js.errors import KeyNotFoundError

from switchyard.bus import subjects
from switchyard.schemas.events import UsageEvent
from switchyard.schemas.health import PREFIX, Cooldown
from switchyard.schemas.routing import deployment_id
from tests.fakes.anthropic import REPLY, FakeAnthropic
from tests.fakes.responses import TEXT, FakeResponses
from tests.native_routes import (
    failing_first,
    native_providers,
    native_routes,
    stream_messages,
    stream_responses,
)
from tests.stacks import Stack
from tests.support import usage_events

pytestmark = pytest.mark.integration

CLAUDE = "s43-nmc-claude"
OPENAI = "s43-nmc-openai"
# Route -> (provider, failing model). The failing deployment weighs a million times the other,
# so the first request goes there; the other ("ok") is the one left while it cools.
ROUTES = {
    "s43-nmc-overloaded": (CLAUDE, "stream-late-error"),
    "s43-nmc-api-error": (CLAUDE, "stream-late-api-error"),
    "s43-nmc-invalid": (CLAUDE, "stream-late-invalid"),
    "s43-nmc-resp-failed": (OPENAI, "failed-midway"),
    "s43-nmc-resp-invalid": (OPENAI, "invalid-midway"),
    "s43-nmc-broken": (CLAUDE, "broken"),  # HTTP 500 api_error: rerouted, cooled by a head
}
READY = "s43-nmc-ready"  # written last; answers once the table reached every process


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def native(
    stack: Stack,
    claude_fake: tuple[FakeAnthropic, str],
    responses_fake: tuple[FakeResponses, str],
) -> AsyncIterator[Stack]:
    """Two native providers and the routes of :data:`ROUTES`, this module only."""
    providers = native_providers(CLAUDE, claude_fake[1], OPENAI, responses_fake[1])
    routes = failing_first(ROUTES)
    # Anthropic's only: a Messages request on the OpenAI deployment would be translated to
    # chat completions, which the Responses fake answers 404, cooling its "ok" deployment.
    routes[READY] = [{"provider": CLAUDE, "model": "ok"}]

    async def ready() -> bool:
        return (await stream_messages(stack, READY, "s43-nmc-up")).status_code == 200

    async with native_routes(stack, providers, routes, ready):
        yield stack


def _ask(alias: str) -> Callable[[Stack, str, str], Awaitable[httpx.Response]]:
    return stream_responses if ROUTES[alias][0] == OPENAI else stream_messages


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Wait for ``check`` (generous: a loaded machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _cooldown(stack: Stack, dep: str) -> Cooldown | None:
    """The cooldown every head follows for ``dep``, as stored in ``sy_health``."""
    nc = await stack.connect("provisioner")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.HEALTH_BUCKET)
        try:
            entry = await kv.get(f"{PREFIX}{dep}")
        except KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value or b"", type=Cooldown) if entry.value else None
    finally:
        await nc.close()


async def _billed(stack: Stack, request_id: str) -> UsageEvent:
    """The usage event of ``request_id``: stored once the model-proxy is done with it (after
    any cooldown it writes, which comes before the bill)."""
    nc = await stack.connect("provisioner")
    try:
        js = nc.jetstream()
        for _ in range(150):
            last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
            for seq in range(last, max(0, last - 200), -1):
                raw = await js.get_msg(subjects.USAGE_STREAM, seq)
                for event in usage_events(raw.data):
                    if event.request_id.split(".")[0] == request_id:
                        return event
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    pytest.fail(f"no usage event of {request_id}")


async def _shown(stack: Stack, dep: str) -> dict[str, Any]:
    """``dep``'s cooldown as the admin API's overview shows it (once control follows it)."""
    for _ in range(150):
        listed = await stack.admin("GET", "/deployments")
        assert listed.status_code == 200, listed.text
        for row in listed.json()["deployments"]:
            if row["id"] == dep and row.get("cooldown"):
                return dict(row["cooldown"])
        await asyncio.sleep(0.2)
    pytest.fail(f"the overview never showed the cooldown of {dep}")


def _ends_with_the_providers_error(answer: httpx.Response, last: str) -> None:
    """One attempt; part of the answer, then the provider's failure event, once, last."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-switchyard-attempts"] == "1", answer.text
    events = _events(answer.text)
    kinds = [event["type"] for event in events]
    assert any(kind.endswith("delta") for kind in kinds), kinds
    assert kinds[-1] == last, kinds
    assert kinds.count("error") + kinds.count("response.failed") == 1, kinds  # no second one


@pytest.mark.parametrize(
    ("alias", "status"),
    [
        ("s43-nmc-overloaded", 529),  # overloaded_error, as Anthropic's 529
        ("s43-nmc-api-error", 500),  # api_error: the provider's 500, not the bus's 502
        ("s43-nmc-resp-failed", 500),  # response.failed with server_error
    ],
)
async def test_a_native_failure_event_after_content_cools_the_deployment(
    native: Stack, alias: str, status: int
) -> None:
    """The client's stream ends with the provider's own event; the deployment then cools for
    every head (``routing.cooldown_s``), and the next requests go to the route's other one."""
    provider, model = ROUTES[alias]
    failing, other = deployment_id(provider, model), deployment_id(provider, "ok")
    ask = _ask(alias)
    await native.admin("DELETE", f"/deployments/{failing}/cooldown")
    try:
        answer = await ask(native, alias, f"{alias}-1")
        assert answer.headers["x-switchyard-deployment"] == failing
        last = "response.failed" if provider == OPENAI else "error"
        _ends_with_the_providers_error(answer, last)
        deltas = [e.get("delta") for e in _events(answer.text) if e["type"].endswith("delta")]
        assert deltas[0] in (TEXT, {"type": "text_delta", "text": REPLY[0]}), deltas

        async def cooled() -> bool:
            return await _cooldown(native, failing) is not None

        await _until(cooled, f"the cooldown of {failing}")
        entry = await _cooldown(native, failing)
        assert entry is not None
        assert entry.status == status, entry
        assert entry.until - entry.since == pytest.approx(native.settings.routing.cooldown_s)
        assert entry.reason.startswith(f"{failing}: "), entry
        # While it cools (less what a request takes to reach a head), the other one answers.
        went: list[str] = []
        while time.time() < entry.until - 1.0 and len(went) < 3:
            more = await ask(native, alias, f"{alias}-{len(went) + 2}")
            assert more.status_code == 200, more.text
            went.append(more.headers["x-switchyard-deployment"])
        assert went, "the cooldown ended before a request was sent: nothing was proved"
        assert went[-1] == other, went  # a head may take a moment to follow the bucket
        assert (await _billed(native, f"{alias}-1")).status == (502 if status == 500 else 529)
    finally:
        await native.admin("DELETE", f"/deployments/{failing}/cooldown")


@pytest.mark.parametrize("alias", ["s43-nmc-invalid", "s43-nmc-resp-invalid"])
async def test_a_client_error_event_after_content_cools_nothing(native: Stack, alias: str) -> None:
    """``invalid_request_error`` may be the client's request: the stream ends with it, the
    attempt counts as the client's 400 (it was counted as an answer), and nothing cools."""
    provider, model = ROUTES[alias]
    failing = deployment_id(provider, model)
    await native.admin("DELETE", f"/deployments/{failing}/cooldown")
    request_id = f"{alias}-1"
    answer = await _ask(alias)(native, alias, request_id)
    assert answer.headers["x-switchyard-deployment"] == failing
    _ends_with_the_providers_error(answer, "error")
    billed = await _billed(native, request_id)  # the model-proxy is done with it
    assert billed.status == 400, billed
    assert await _cooldown(native, failing) is None


async def test_a_provider_500_shows_500_in_the_cooldown(native: Stack) -> None:
    """A 500 before any content is rerouted and the head cools the deployment: the cooldown
    records the provider's 500, not the 502 the bus carries for it."""
    alias = "s43-nmc-broken"
    failing, other = deployment_id(CLAUDE, "broken"), deployment_id(CLAUDE, "ok")
    await native.admin("DELETE", f"/deployments/{failing}/cooldown")
    try:
        answer = await stream_messages(native, alias, f"{alias}-1")
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-switchyard-attempts"] == "2"
        assert answer.headers["x-switchyard-deployment"] == other
        entry = await _cooldown(native, failing)
        assert entry is not None, f"{failing} was not cooled"
        assert entry.status == 500, entry
        assert entry.reason.startswith(f"{failing}: 500 "), entry  # the provider's, too
        shown = await _shown(native, failing)
        assert (shown["status"], shown["reason"]) == (500, entry.reason), shown
    finally:
        await native.admin("DELETE", f"/deployments/{failing}/cooldown")
