"""A provider key a model-proxy cannot fetch (Vault down, nothing cached) while other
model-proxies may hold it: the request goes back to its queue a bounded number of times, then
is rerouted without a cooldown, or answered here with ``Retry-After`` when its route has
nowhere else to go.

An explorer found that a model-proxy restarted during a Vault outage answered its share of
the traffic (235 of 564 requests) with 503 ``secret_unavailable``, although the other
model-proxy had the key cached: the failure was neither retryable nor handed back.
"""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from switchyard.bus.envelope import Deadline, Envelope
from switchyard.errors import ProviderError, SecretMissing, ServiceUnavailable
from switchyard.runtime.secret_cache import UNAVAILABLE_RETRY_S, unavailable
from switchyard.schemas.routing import Deployment, Provider, Route, RouteTable, deployment_id
from switchyard.workers.modelproxy.handback import HAND_BACK_DELAY_S, hand_back, nowhere_else
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job
from switchyard.workers.modelproxy.providers.upstream_errors import (
    key_unreachable,
    no_cooldown,
    retryable,
)
from switchyard.workers.modelproxy.reroutes import reroute_failed

pytestmark = pytest.mark.unit

A = deployment_id("prov", "model-a")
B = deployment_id("prov", "model-b")
UNREACHABLE = unavailable("openai-prod", "Vault/OpenBao is sealed or down")
MISSING = SecretMissing("provider key `openai-prod` is unavailable: no secret named `x`")


def _table(**routes: Route) -> RouteTable:
    provider = Provider(kind="openai-compatible", api_base="http://p.test/v1", secret="k")
    return RouteTable(providers={"prov": provider}, routes=routes)


def _route(*models: str, fallbacks: tuple[str, ...] = ()) -> Route:
    deployments = tuple(Deployment(provider="prov", model=m) for m in models)
    return Route(deployments=deployments, fallbacks=fallbacks)


def _env(**fields: object) -> Envelope:
    env = Envelope(request_id="req-1", alias="chat", reply="_INBOX.x", op="chat")
    return env.with_(deadline=Deadline.after(60), **fields)


def _job(env: Envelope, deployment: str) -> Job:
    """A job as a model-proxy holds one (a message as pulled from its queue; never answered)."""
    msg = Msg(
        _client=None,  # type: ignore[arg-type]
        subject=f"llm.v1.dispatch.{deployment}",
        reply="$JS.ACK.DISPATCH.c.1.7.7.1700000000000000000.0",
        data=b"{}",
        headers=env.encode(),
    )
    return Job(msg=msg, env=env, deployment_id=deployment, inflight=InFlight("r", msg, 0.0, 0.0))


def test_a_key_that_cannot_be_fetched_is_retryable_without_cooldown_and_says_when() -> None:
    assert key_unreachable(UNREACHABLE)
    assert retryable(UNREACHABLE)
    assert no_cooldown(UNREACHABLE)
    assert UNREACHABLE.status == 503
    assert UNREACHABLE.code == "secret_unavailable"
    assert UNREACHABLE.retry_after == UNAVAILABLE_RETRY_S
    # A key not stored at all is rerouted too, but never handed to another model-proxy.
    assert not key_unreachable(MISSING)
    assert retryable(MISSING)
    # Other 503s are not about a key.
    assert not key_unreachable(ServiceUnavailable("busy", code="queue_full"))
    assert not key_unreachable(ProviderError("down", provider=A, upstream_status=503))


def test_the_reroute_of_an_unfetchable_key_cools_nothing() -> None:
    """The provider is fine: a head must not cool the deployment for every other
    model-proxy, which may hold the key."""
    rerouted = Envelope.decode(reroute_failed(_job(_env(), A), UNREACHABLE).encode())
    assert rerouted.tried == (A,)
    assert rerouted.last_status == 503
    assert rerouted.retry_after == 0.0


def test_hand_back_is_bounded_by_the_deliveries_and_the_deadline() -> None:
    # Every delivery but the last one, with time left.
    assert hand_back(UNREACHABLE, delivered=1, max_deliver=3, left_s=30)
    assert hand_back(UNREACHABLE, delivered=2, max_deliver=3, left_s=30)
    assert not hand_back(UNREACHABLE, delivered=3, max_deliver=3, left_s=30)
    assert not hand_back(UNREACHABLE, delivered=1, max_deliver=1, left_s=30)
    # Too close to the deadline for another try: answered now.
    assert not hand_back(UNREACHABLE, delivered=1, max_deliver=3, left_s=HAND_BACK_DELAY_S)
    # Not for other failures: a key not stored, a provider's own failure.
    assert not hand_back(MISSING, delivered=1, max_deliver=3, left_s=30)
    down = ProviderError("down", provider=A, upstream_status=503, retryable=True)
    assert not hand_back(down, delivered=1, max_deliver=3, left_s=30)


def test_nowhere_else_only_when_the_route_has_no_other_deployment_nor_fallback() -> None:
    table = _table(
        chat=_route("model-a"),
        pair=_route("model-a", "model-b"),
        falls=_route("model-a", fallbacks=("pair",)),
    )
    assert nowhere_else(table, _env(), A)  # answered here, with Retry-After
    assert not nowhere_else(table, _env(alias="pair"), A)
    assert not nowhere_else(table, _env(alias="falls"), A)
    # Tried elsewhere before: the head's answer lists every attempt.
    assert not nowhere_else(table, _env(tried=(B,)), A)
    # Pinned (the management API's test of one deployment): nowhere else, whatever the route.
    assert nowhere_else(table, _env(alias="pair", pin=A), A)
    # A route this model-proxy does not know (yet): the head decides.
    assert not nowhere_else(table, _env(alias="unknown"), A)
