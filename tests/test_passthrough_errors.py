"""A native stream that answers 200 and then reports a failure in an event, before any of its
answer (Anthropic's ``error`` when overloaded; Responses' ``error`` or ``response.failed``),
is that attempt's failure, end to end on the session stack: the request is answered by the
route's other deployment, the failing one is cooled, and the failed attempt is billed nothing.
It was relayed as the answer: one attempt, the SDK's APIStatusError, the deployment kept in use
and the key billed an estimate for an answer with no content."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
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

CLAUDE = "s41-passerr-claude"
OPENAI = "s41-passerr-openai"
# Route -> (provider, failing model). The failing deployment weighs a million times the other,
# so the first attempt goes there; the other is the one left to answer.
ROUTES = {
    "s41-pe-overloaded": (CLAUDE, "stream-overloaded"),
    "s41-pe-after-start": (CLAUDE, "stream-api-error"),
    "s41-pe-invalid": (CLAUDE, "stream-invalid"),
    "s41-pe-late": (CLAUDE, "stream-late-error"),
    "s41-pe-resp-error": (OPENAI, "error-first"),
    "s41-pe-resp-failed": (OPENAI, "failed-opening"),
}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def native(
    stack: Stack,
    claude_fake: tuple[FakeAnthropic, str],
    responses_fake: tuple[FakeResponses, str],
) -> AsyncIterator[Stack]:
    """Two native providers and the routes of :data:`ROUTES`, this module only."""
    providers = native_providers(CLAUDE, claude_fake[1], OPENAI, responses_fake[1])
    routes = failing_first(ROUTES)

    async def ready() -> bool:
        # The one route that cools nothing (an error after content now cools its deployment)
        return (await stream_messages(stack, "s41-pe-invalid", "up")).status_code == 400

    async with native_routes(stack, providers, routes, ready):
        yield stack


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


async def _cooldown(stack: Stack, dep: str) -> Cooldown | None:
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


async def _billed(stack: Stack, request_id: str, answered_by: str) -> list[UsageEvent]:
    """The usage events of ``request_id``, once the answering deployment's is stored and a
    moment more has passed (a failed attempt's would be stored before its request moved on)."""
    nc = await stack.connect("provisioner")
    found: list[UsageEvent] = []
    try:
        js = nc.jetstream()
        extra = 5  # polls after the answer's event came
        for _ in range(60):
            found = []
            last = (await js.stream_info(subjects.USAGE_STREAM)).state.last_seq
            for seq in range(max(1, last - 200), last + 1):
                raw = await js.get_msg(subjects.USAGE_STREAM, seq)
                found += [
                    e for e in usage_events(raw.data) if e.request_id.split(".")[0] == request_id
                ]
            if any(e.deployment == answered_by for e in found):
                extra -= 1
                if not extra:
                    break
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    return found


async def _fails_over(stack: Stack, alias: str, answer: httpx.Response, request_id: str) -> None:
    provider, model = ROUTES[alias]
    failing, other = deployment_id(provider, model), deployment_id(provider, "ok")
    assert answer.headers["x-switchyard-attempts"] == "2", answer.text
    assert answer.headers["x-switchyard-deployment"] == other
    assert "error" not in {event.get("type") for event in _events(answer.text)}, answer.text
    cooled = await _cooldown(stack, failing)
    assert cooled is not None, f"{failing} was not cooled"
    assert cooled.status in (500, 529), cooled  # the provider's own: api_error, server_error 500
    billed = await _billed(stack, request_id, other)
    assert [e.deployment for e in billed] == [other], billed  # the failed attempt: nothing
    await stack.admin("DELETE", f"/deployments/{failing}/cooldown")


@pytest.mark.parametrize("alias", ["s41-pe-overloaded", "s41-pe-after-start"])
async def test_an_anthropic_error_event_before_the_answer_fails_over(
    native: Stack, alias: str
) -> None:
    """First event ``error`` (``overloaded_error``), or ``api_error`` right after
    ``message_start`` and a ``ping`` (held back until the answer's first event)."""
    request_id = f"{alias}-1"
    answer = await stream_messages(native, alias, request_id)
    assert answer.status_code == 200, answer.text
    kinds = [event["type"] for event in _events(answer.text)]
    assert kinds.count("message_start") == 1, kinds  # the failed attempt's never went out
    text = "".join(
        e["delta"].get("text", "") for e in _events(answer.text) if e["type"].endswith("delta")
    )
    assert text == "".join(REPLY)
    await _fails_over(native, alias, answer, request_id)


@pytest.mark.parametrize("alias", ["s41-pe-resp-error", "s41-pe-resp-failed"])
async def test_a_responses_failure_event_before_the_answer_fails_over(
    native: Stack, alias: str
) -> None:
    """First event ``error``, or ``response.failed`` right after ``response.created`` and
    ``response.in_progress``."""
    request_id = f"{alias}-1"
    answer = await stream_responses(native, alias, request_id)
    assert answer.status_code == 200, answer.text
    kinds = [event["type"] for event in _events(answer.text)]
    assert "response.failed" not in kinds, kinds
    assert kinds.count("response.created") == 1, kinds
    assert kinds[-1] == "response.completed", kinds
    deltas = [e["delta"] for e in _events(answer.text) if e["type"].endswith(".delta")]
    assert deltas == [TEXT]
    await _fails_over(native, alias, answer, request_id)


async def test_an_invalid_request_error_event_is_the_clients_400(
    native: Stack, claude_fake: tuple[FakeAnthropic, str]
) -> None:
    """Not retried (every deployment would answer the same), not cooled, not billed."""
    fake, _ = claude_fake
    before = len(fake.calls)
    answer = await stream_messages(native, "s41-pe-invalid", "s41-pe-invalid-1")
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["type"] == "error", error
    assert error["error"]["type"] == "invalid_request_error", error
    assert "text content blocks must be non-empty" in error["error"]["message"]
    assert [c.body["model"] for c in fake.calls[before:]] == ["stream-invalid"]
    assert await _cooldown(native, deployment_id(CLAUDE, "stream-invalid")) is None


async def test_an_error_event_after_content_still_ends_the_relayed_stream(native: Stack) -> None:
    """Content went out: nothing to retry. The error event reaches the client as Anthropic
    sent it, after the text already sent (as before)."""
    answer = await stream_messages(native, "s41-pe-late", "s41-pe-late-1")
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-switchyard-attempts"] == "1"
    kinds = [event["type"] for event in _events(answer.text)]
    assert kinds[0] == "message_start", kinds
    assert "content_block_delta" in kinds, kinds
    assert kinds[-1] == "error", kinds
