"""Removal bounces: a request queued for a deployment that left every route is handed back to
the heads without counting as an attempt, and the heads bound how often that happens.

A review found that a route swapped A->B->A turned queued requests into 502s: each bounce was
recorded as a tried deployment (excluded for the rest of the request) and as one of
``routing.max_attempts``, although no provider was ever called.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus.envelope import Deadline, Envelope, MalformedHeader
from switchyard.errors import ProviderError, ServiceUnavailable
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.schemas.health import Cooldown
from switchyard.schemas.openai import error_body
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
from switchyard.workers.modelproxy.reroutes import reroute_bounced, reroute_failed

pytestmark = pytest.mark.unit

A = deployment_id("prov", "model-a")
B = deployment_id("prov", "model-b")
C = deployment_id("prov", "model-c")


def _table(*models: str) -> Router:
    """A router for one alias, ``swap``, served by the deployments of ``models``."""
    provider = Provider(kind="openai-compatible", api_base="http://p.test/v1")
    deployments = tuple(Deployment(provider="prov", model=m) for m in models)
    doc = RouteTable(providers={"prov": provider}, routes={"swap": Route(deployments=deployments)})
    return Router(decode_route_table(msgspec.json.encode(doc)))


def _job(env: Envelope, deployment: str) -> Job:
    """A job as a model-proxy holds one: a real NATS message, as pulled from its queue."""
    # No client: the message is never answered here.
    msg = Msg(
        _client=None,  # type: ignore[arg-type]
        subject=f"llm.v1.dispatch.{deployment}",
        reply="$JS.ACK.DISPATCH.c.1.7.7.1700000000000000000.0",
        data=b"{}",
        headers=env.encode(),
    )
    return Job(msg=msg, env=env, deployment_id=deployment, inflight=InFlight("r", msg, 0.0, 0.0))


def _queued(**fields: object) -> Envelope:
    env = Envelope(request_id="req-1", alias="swap", reply="_INBOX.x", op="chat")
    return env.with_(deadline=Deadline.after(60), **fields)


def _over_the_wire(env: Envelope) -> Envelope:
    return Envelope.decode(env.encode())


def test_a_bounce_is_not_a_try_nor_an_attempt() -> None:
    """The model-proxy's bounce leaves ``tried``, the errors and the attempt count alone; a
    real failure still adds to them."""
    earlier = _queued(tried=(C,), errors=f"{C}: 502 boom", last_status=502, retry_after=3.0)
    bounced = _over_the_wire(reroute_bounced(_job(earlier, A)))
    assert bounced.tried == (C,)
    assert bounced.errors == f"{C}: 502 boom"
    assert (bounced.last_status, bounced.retry_after) == (502, 3.0)
    assert bounced.hop == earlier.hop  # the attempts an answer reports
    assert (bounced.bounces, bounced.removed) == (1, A)
    again = _over_the_wire(reroute_bounced(_job(bounced.with_(removed=""), B)))
    assert (again.bounces, again.removed, again.tried) == (2, B, (C,))

    failed = reroute_failed(_job(bounced.with_(removed=""), B), ProviderError("down", provider=B))
    assert failed.tried == (C, B)
    assert failed.bounces == 1  # carried on: the bound is per request


def test_a_swap_back_and_forth_still_serves_the_queued_request() -> None:
    """A->B->A: the request bounces off A (now B), then off B (A again), and A takes it."""
    env = _queued()
    book = Cooldowns()
    off_a = _over_the_wire(reroute_bounced(_job(env, A)))
    assert decide.after_removal(_table("model-b"), book, off_a) == ("", 0.0)
    assert decide.choose(_table("model-b"), book, off_a, pinned=None).id == B
    off_b = _over_the_wire(reroute_bounced(_job(off_a.with_(removed="", deployment=B), B)))
    assert decide.after_removal(_table("model-a"), book, off_b) == ("", 0.0)
    assert decide.choose(_table("model-a"), book, off_b, pinned=None).id == A
    assert off_b.hop == 0  # answered as the first attempt


def test_a_head_that_still_routes_the_bounced_deployment_sends_elsewhere_or_waits() -> None:
    """Head and model-proxy disagree for a moment on the table: the head sends the request
    to another deployment if the route has one, else waits a short, growing pause."""
    book = Cooldowns()
    bounced = _over_the_wire(reroute_bounced(_job(_queued(), A)))
    both = _table("model-a", "model-b")
    assert decide.after_removal(both, book, bounced) == (A, 0.0)
    picks = {decide.choose(both, book, bounced, pinned=None, avoid=A).id for _ in range(50)}
    assert picks == {B}
    assert bounced.tried == ()  # avoided for this placement only

    alone = _table("model-a")
    avoid, pause = decide.after_removal(alone, book, bounced)
    assert avoid == ""
    assert 0 < pause <= decide.REMOVAL_PAUSE_MAX_S
    # Nothing else to take it: the avoided deployment is chosen after all (it may be the
    # model-proxy whose table is behind).
    assert decide.choose(alone, book, bounced, pinned=None, avoid=A).id == A

    pauses = [decide.removal_pause(n) for n in range(1, decide.MAX_BOUNCES + 1)]
    assert pauses == sorted(pauses)
    assert pauses[-1] <= decide.REMOVAL_PAUSE_MAX_S


def test_a_cooling_alternative_is_not_where_a_bounce_goes() -> None:
    book = Cooldowns({B: Cooldown(deployment=B, until=4102444800.0, status=502)})
    bounced = _over_the_wire(reroute_bounced(_job(_queued(), A)))
    avoid, pause = decide.after_removal(_table("model-a", "model-b"), book, bounced)
    assert avoid == ""
    assert pause > 0


def test_bounces_are_bounded_by_a_clear_503() -> None:
    """The hot loop (a head routing where every model-proxy bounces) ends with 503
    ``deployment_removed``, OpenAI-shaped, with ``Retry-After``, naming no secret."""
    env = _queued(bounces=decide.MAX_BOUNCES, removed=A)
    assert decide.after_removal(_table("model-a"), Cooldowns(), env)[1] > 0
    past = env.with_(bounces=decide.MAX_BOUNCES + 1)
    with pytest.raises(ServiceUnavailable) as raised:
        decide.after_removal(_table("model-a"), Cooldowns(), past)
    exc = raised.value
    assert (exc.status, exc.code, exc.retry_after) == (503, "deployment_removed", 1.0)
    error = json.loads(error_body(exc))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "swap" in error["message"]
    assert A in error["message"]

    pinned = _queued(bounces=1, removed=A, pin=A)
    with pytest.raises(ServiceUnavailable) as raised:
        decide.after_removal(_table("model-a"), Cooldowns(), pinned)
    assert raised.value.code == "deployment_removed"


def test_the_envelope_carries_bounces_only_when_there_are_some() -> None:
    plain = _queued(tried=(C,))
    headers = plain.encode()
    assert h.BOUNCES not in headers
    assert h.REMOVED not in headers
    # A deployment name alone says nothing: only a bounce (a count) carries one.
    assert Envelope.decode({**headers, h.REMOVED: A}).removed == ""
    bounced = Envelope.decode({**headers, h.BOUNCES: "2", h.REMOVED: A})
    assert (bounced.bounces, bounced.removed) == (2, A)
    assert Envelope.decode(bounced.encode()) == bounced
    for bad in ("0", "-1", "x", "1001"):
        with pytest.raises(MalformedHeader):
            Envelope.decode({**headers, h.BOUNCES: bad})
    with pytest.raises(MalformedHeader):
        Envelope.decode({**headers, h.BOUNCES: "1", h.REMOVED: "d" * 129})
