"""A deployment whose provider has no place for a field of the request (``top_k`` to Anthropic
through litellm) hands the request back marked ``unfit``: no attempt, no cooldown; the heads
answer 400 only when no deployment of the route is left that might take it.

The end-to-end checks (a mixed route over real NATS and fake providers over HTTP) are in
tests/test_unfit_reroute.py.
"""

from __future__ import annotations

import random

import msgspec
import pytest
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.config import RoutingSettings
from switchyard.errors import (
    ApiError,
    DeploymentCannotTake,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.schemas.health import Cooldown
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    Route,
    RouteTable,
    decode_route_table,
    deployment_id,
)
from switchyard.workers.head import decide
from switchyard.workers.head.router import Router
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.providers import litellm_params
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.reroutes import answered_here, reroute_failed

pytestmark = pytest.mark.unit

A = deployment_id("prov", "model-a")
B = deployment_id("prov", "model-b")
TOP_K = litellm_params.refusal("claude", "model-a", ["top_k"], "")
FAR = 4102444800.0  # a cooldown that outlives the test


def _table(*models: str) -> RouteTable:
    provider = Provider(kind="openai-compatible", api_base="http://p.test/v1")
    deployments = tuple(Deployment(provider="prov", model=m) for m in models)
    doc = RouteTable(providers={"prov": provider}, routes={"mix": Route(deployments=deployments)})
    return decode_route_table(msgspec.json.encode(doc))


def _env(**fields: object) -> Envelope:
    env = Envelope(request_id="req-1", alias="mix", reply="_INBOX.x", op="chat")
    return env.with_(deadline=Deadline.after(60), **fields)


def _job(env: Envelope, deployment: str) -> Job:
    msg = Msg(
        _client=None,  # type: ignore[arg-type]
        subject=f"llm.v1.dispatch.{deployment}",
        reply="$JS.ACK.DISPATCH.c.1.7.7.1700000000000000000.0",
        data=b"{}",
        headers=env.encode(),
    )
    return Job(msg=msg, env=env, deployment_id=deployment, inflight=InFlight("r", msg, 0.0, 0.0))


def _wire(env: Envelope) -> Envelope:
    return Envelope.decode(env.encode())


def test_a_field_the_provider_cannot_take_goes_back_as_no_attempt() -> None:
    """The refusals of litellm's fields are a kind of their own: retried elsewhere, cooling
    nothing; a client's own malformed value (tool_choice) stays a plain 400 answered at once."""
    assert isinstance(TOP_K, DeploymentCannotTake)
    assert (TOP_K.status, TOP_K.code, TOP_K.param) == (400, "unsupported_parameter", "top_k")
    assert ue.retryable(TOP_K)
    assert ue.no_cooldown(TOP_K)
    malformed = InvalidRequest("`tool_choice` must be ...", param="tool_choice")
    assert not ue.retryable(malformed)

    back = _wire(reroute_failed(_job(_env(), A), TOP_K))
    assert back.tried == back.unfit == (A,)
    assert (back.unfit_code, back.unfit_param) == ("unsupported_parameter", "top_k")
    assert (back.last_status, back.retry_after, back.provider_attempts) == (400, 0.0, 0)
    assert back.errors.startswith(f"{A}: 400 `top_k`: provider claude")


def test_an_earlier_failure_stays_the_answers_kind() -> None:
    """A 429 on one deployment, then a field another cannot take: the answer is still the
    rate limit, with the wait of the deployment cooling for it (not the 0 s of the refusal)."""
    limited = _env(tried=(B,), errors=f"{B}: 429 slow down", last_status=429, retry_after=9.0)
    back = _wire(reroute_failed(_job(limited, A), TOP_K))
    assert (back.last_status, back.unfit, back.provider_attempts) == (429, (A,), 1)
    exc = decide.exhausted(back, retry_after=8.5)
    assert isinstance(exc, RateLimited)
    assert exc.retry_after == 8.5


def test_a_refusal_keeps_the_wait_of_the_429_before_it() -> None:
    """A answers 429 Retry-After 30, B cannot take a field, C's queue is full with the
    attempts spent: the answer is the 429 with A's 30 s. The refusal's 0 s wait replaced
    A's, so the client was told to retry at once."""
    C = deployment_id("prov", "model-c")
    limited = _env(tried=(B,), errors=f"{B}: 429 slow down", last_status=429, retry_after=30.0)
    back = _wire(reroute_failed(_job(limited, A), TOP_K))
    assert (back.last_status, back.retry_after) == (429, 30.0)
    assert decide.after_attempt(back, RoutingSettings()) == (0.0, 0.0)  # no cooldown, no pause
    # The head's full-queue step (_place) keeps an earlier rate limit's wait as it is.
    full = back.with_(tried=(*back.tried, C), errors=f"{back.errors}; {C}: 503 full")
    exc = decide.exhausted(full)
    assert isinstance(exc, RateLimited)
    assert exc.retry_after == 30.0
    # Refused last, after the 429: still A's wait (a refusal's own 0 s is no provider's).
    assert decide.exhausted(back).retry_after == 30.0
    assert decide.exhausted(_wire(reroute_failed(_job(_env(), A), TOP_K))).status == 400


def test_refusals_neither_cool_nor_lengthen_the_backoff_of_a_real_failure() -> None:
    """`backoff` was fed every deployment tried: after two refusals, a provider's first
    failure paused as long as a third one."""
    settings = RoutingSettings(backoff_s=0.1, backoff_max_s=10.0)
    X, Y = deployment_id("prov", "model-x"), deployment_id("prov", "model-y")
    failed = _env(tried=(X, Y, A), unfit=(X, Y), last_status=502, errors="...")
    first = decide.backoff(1, settings, random.Random(7))
    assert decide.after_attempt(failed, settings, random.Random(7)) == (5.0, first)
    asked = failed.with_(retry_after=2.0)
    assert decide.after_attempt(asked, settings, random.Random(7)) == (2.0, first)
    refused = _env(tried=(A, X), unfit=(X,), last_status=502, retry_after=30.0)
    assert decide.after_attempt(refused, settings) == (0.0, 0.0)
    keyless = _env(tried=(A,), last_status=503, retry_after=0.0)  # a provider never called
    assert decide.after_attempt(keyless, settings) == (0.0, 0.0)


def test_only_when_every_deployment_refused_a_field_is_the_client_answered_400() -> None:
    both = _env(
        tried=(A, B),
        unfit=(A, B),
        unfit_code="unsupported_parameter",
        unfit_param="top_k",
        last_status=400,
        errors=f"{A}: 400 `top_k`: no; {B}: 400 `top_k`: no",
    )
    exc = decide.exhausted(both)
    assert type(exc) is InvalidRequest
    assert (exc.status, exc.code, exc.param) == (400, "unsupported_parameter", "top_k")
    assert A in exc.message
    assert B in exc.message
    assert "mix" in exc.message
    # One untried deployment still cooling down may take it: said when it is back.
    waiting = decide.exhausted(both, retry_after=4.0, cooling=("prov--c",))
    assert isinstance(waiting, ServiceUnavailable)
    assert (waiting.code, waiting.retry_after) == ("deployments_cooling_down", 4.0)


def test_the_next_pick_skips_the_refusing_deployment_and_a_cooling_one_is_a_last_resort() -> None:
    router = Router(_table("model-a", "model-b"))
    refused = _env(tried=(A,), unfit=(A,), last_status=400, retry_after=0.0)
    assert {decide.choose(router, Cooldowns(), refused, pinned=None).id for _ in range(20)} == {B}
    # B cools after an error of its own: no attempt was made yet, so it is the last resort
    # (never A again, which cannot take the request).
    book = Cooldowns({B: Cooldown(deployment=B, until=FAR, status=502)})
    assert decide.choose(router, book, refused, pinned=None).id == B
    # Had A made a real attempt, the cooling B would not be tried (as before).
    failed = _env(tried=(A,), last_status=502, errors=f"{A}: 502 boom")
    with pytest.raises(ApiError) as caught:
        decide.choose(router, book, failed, pinned=None)
    assert caught.value.status == 502


def test_a_route_with_nowhere_else_is_answered_by_the_model_proxy() -> None:
    """Its own 400, as before: no hop to a head that could only say the same."""
    assert answered_here(TOP_K, _table("model-a"), _env(), A)
    assert not answered_here(TOP_K, _table("model-a", "model-b"), _env(), A)
    assert answered_here(TOP_K, _table("model-a", "model-b"), _env(pin=A), A)
    malformed = InvalidRequest("bad", param="messages")
    assert not answered_here(malformed, _table("model-a"), _env(), A)


def test_a_client_cannot_claim_refusals_it_did_not_get() -> None:
    """A caller's Sy-Unfit would let its request past routing.max_attempts: the head clears it
    with the other reroute fields (see head.service._route; checked through a real head in
    tests/test_unfit_reroute.py); here only that the header is bounded anyway."""
    headers = {h.REQUEST_ID: "r", h.UNFIT: ",".join(["x"] * 40)}
    with pytest.raises(InvalidRequest):
        Envelope.decode(headers)


def test_a_refusal_is_not_counted_in_the_answers_attempts() -> None:
    """``Sy-Attempts`` (``x-switchyard-attempts``) counted a refusal: a request one deployment
    refused `top_k` and another answered said 2 attempts, of which one called no provider.
    It counts what ``routing.max_attempts`` counts, plus the answering one."""
    refused = _wire(reroute_failed(_job(_env(), A), TOP_K))
    assert _job(refused, B).attempts == 1  # the answer's: one provider call
    failed = _env(tried=(B, A), unfit=(A,), errors=f"{B}: 500 boom; {A}: 400 `top_k`")
    named = decide.Named()
    named.tried(failed)  # the head's error after a failure and a refusal
    assert (named.deployment, named.attempts) == (A, 1)
    named.refused_by(B, refused)  # a full queue after a refusal
    assert (named.deployment, named.attempts) == (B, 1)
