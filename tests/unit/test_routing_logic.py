"""Routing decisions and cooldown math: pure policy, no servers.

What a head decides for one attempt (weights, fallbacks, skipping what was tried or is cooling
down, one clear error when nothing is left) and what a model-proxy builds per route table.
"""

from __future__ import annotations

import random
import secrets
import time

import msgspec
import pytest
from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.bus.envelope import MAX_TRIED, Envelope
from switchyard.bus.replies import error_headers
from switchyard.config import RoutingSettings, Settings
from switchyard.errors import ModelNotFound, ProviderError, RateLimited, ServiceUnavailable
from switchyard.runtime.cooldowns import CooldownBook, Cooldowns
from switchyard.runtime.http import error_response
from switchyard.runtime.secret_cache import SecretCache
from switchyard.schemas.health import MAX_COOLDOWN_S, Cooldown
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    Route,
    RouteTable,
    decode_route_table,
    deployment_id,
)
from switchyard.schemas.secrets import SecretPayload
from switchyard.secrets.vault import StoredSecret
from switchyard.workers.head import decide
from switchyard.workers.head.router import Router
from switchyard.workers.modelproxy.handler import Handler
from switchyard.workers.modelproxy.heartbeat import Heartbeats
from switchyard.workers.modelproxy.providers.registry import Adapters

pytestmark = pytest.mark.unit


def _two_route_table() -> RouteTable:
    provider = Provider(kind="openai-compatible", api_base="http://p.test/v1")
    doc = RouteTable(
        providers={"a": provider, "b": provider},
        routes={
            "main": Route(
                deployments=(
                    Deployment(provider="a", model="m1", weight=3),
                    Deployment(provider="b", model="m1", weight=1),
                ),
                fallbacks=("backup",),
            ),
            "backup": Route(deployments=(Deployment(provider="b", model="m2"),)),
        },
    )
    return decode_route_table(msgspec.json.encode(doc))


def _env(alias: str, **fields: object) -> Envelope:
    return Envelope(request_id="r", alias=alias).with_(**fields)


def test_weights_spread_load_in_proportion() -> None:
    router = Router(_two_route_table())
    random.seed(7)
    picks = [decide.choose(router, Cooldowns(), _env("main"), pinned=None).id for _ in range(4000)]
    share = picks.count(deployment_id("a", "m1")) / len(picks)
    assert 0.72 < share < 0.78  # 3:1


def test_tried_and_cooling_deployments_are_skipped_then_fallbacks_used() -> None:
    router = Router(_two_route_table())
    a, b, backup = deployment_id("a", "m1"), deployment_id("b", "m1"), deployment_id("b", "m2")
    assert decide.choose(router, Cooldowns(), _env("main", tried=(a,)), pinned=None).id == b
    cooling = Cooldowns({b: Cooldown(deployment=b, until=time.time() + 60)})
    assert decide.choose(router, cooling, _env("main", tried=(a,)), pinned=None).id == backup


def test_nothing_left_after_failures_is_one_error_naming_every_attempt() -> None:
    router = Router(_two_route_table())
    tried = (deployment_id("a", "m1"), deployment_id("b", "m1"), deployment_id("b", "m2"))
    env = _env("main", tried=tried, errors="a: 500 x; b: 502 y; c: 503 z", last_status=503)
    with pytest.raises(ProviderError) as caught:
        decide.choose(router, Cooldowns(), env, pinned=None)
    assert caught.value.code == "all_deployments_failed"
    assert "all 3 attempts for `main` failed" in caught.value.message
    limited = env.with_(last_status=429, retry_after=4.0)
    with pytest.raises(RateLimited) as rate:
        decide.choose(router, Cooldowns(), limited, pinned=None)
    assert rate.value.retry_after == 4.0


def test_a_429_after_every_attempt_says_when_the_first_deployment_is_back() -> None:
    """Every attempt was rate limited; the last (the fallback) asked 45 s, the route's first
    deployment 15 s: the answer says 15 s, when the route is usable again, not the last
    provider's wait (as :func:`decide.attempts_spent` does when the attempts ran out)."""
    router = Router(_two_route_table())
    a, b, backup = deployment_id("a", "m1"), deployment_id("b", "m1"), deployment_id("b", "m2")
    now = time.time()
    book = Cooldowns(
        {
            a: Cooldown(deployment=a, until=now + 15, status=429, asked=True),
            b: Cooldown(deployment=b, until=now + 45, status=429, asked=True),
            backup: Cooldown(deployment=backup, until=now + 45, status=429, asked=True),
        }
    )
    env = _env("main", tried=(a, b, backup), last_status=429, retry_after=45.0)
    with pytest.raises(RateLimited) as caught:
        decide.choose(router, book, env, pinned=None)
    assert caught.value.retry_after == pytest.approx(15, abs=0.5)
    assert decide.attempts_spent(router, book, env).retry_after == pytest.approx(15, abs=0.5)


def test_one_attempt_without_its_key_is_a_503_with_the_wait_for_the_others() -> None:
    """The first choice had no stored key (a 503 from the model-proxy, rerouted); the others
    cool down: the answer is the key's 503, and says when the first of them is back."""
    router = Router(_two_route_table())
    a, b, backup = deployment_id("a", "m1"), deployment_id("b", "m1"), deployment_id("b", "m2")
    now = time.time()
    book = Cooldowns(
        {
            b: Cooldown(deployment=b, until=now + 12, status=502, asked=True),
            backup: Cooldown(deployment=backup, until=now + 7, status=502, asked=True),
        }
    )
    env = _env("main", tried=(a,), errors="a_m1: 503 provider key `k` is unavailable")
    with pytest.raises(ServiceUnavailable) as caught:
        decide.choose(router, book, env.with_(last_status=503), pinned=None)
    assert caught.value.code == "secret_unavailable"
    assert "provider key `k` is unavailable" in caught.value.message
    assert caught.value.message.startswith("the one attempt for `main` failed")
    # The ones skipped are named, or the error reads as if the key were the only problem.
    assert f"not tried while cooling down after errors: {b}, {backup}" in caught.value.message
    assert caught.value.retry_after == pytest.approx(7, abs=0.5)
    # A provider's failure (502) with the rest cooling: all_deployments_failed, same wait.
    with pytest.raises(ProviderError) as failed:
        decide.choose(router, book, env.with_(last_status=502), pinned=None)
    assert failed.value.retry_after == pytest.approx(7, abs=0.5)


def test_a_cooldown_after_an_error_does_not_refuse_what_nothing_else_can_serve() -> None:
    """A cooldown Switchyard chose after an error (a 5xx, a timeout: not ``asked``) steers
    requests to other deployments; when every candidate cools down, the one back first is
    tried, not refused: one failing request, any tenant's, refused every request of a
    one-deployment route for ``routing.cooldown_s``. A rate limit (429) or a provider's own
    ``Retry-After`` still refuses."""
    router = Router(_two_route_table())
    a, b, backup = deployment_id("a", "m1"), deployment_id("b", "m1"), deployment_id("b", "m2")
    now = time.time()
    erred = {
        a: Cooldown(deployment=a, until=now + 30, status=500),
        b: Cooldown(deployment=b, until=now + 10, status=502),
        backup: Cooldown(deployment=backup, until=now + 20, status=504),
    }
    book = Cooldowns(erred)
    assert decide.choose(router, book, _env("main"), pinned=None).id == b
    assert decide.choose(router, book, _env("backup"), pinned=None).id == backup
    # One try per request: after it, the request's own failure (and when the rest is back).
    with pytest.raises(ProviderError) as failed:
        decide.choose(router, book, _env("main", tried=(b,)), pinned=None)
    assert failed.value.code == "all_deployments_failed"
    # Asked-for waits are kept: a 429 without Retry-After, a 503 with one.
    rate_limited = Cooldown(deployment=b, until=now + 10, status=429)
    limited = Cooldowns({**erred, b: rate_limited})
    assert decide.choose(router, limited, _env("main"), pinned=None).id == backup
    asked = Cooldown(deployment=backup, until=now + 5, status=503, asked=True)
    told = Cooldowns({**erred, b: rate_limited, backup: asked})
    assert decide.choose(router, told, _env("main"), pinned=None).id == a
    with pytest.raises(ServiceUnavailable) as refused:
        decide.choose(router, Cooldowns({backup: asked}), _env("backup"), pinned=None)
    assert refused.value.code == "deployments_cooling_down"
    assert refused.value.retry_after == pytest.approx(5, abs=0.5)
    only_limits = Cooldowns(
        {d: Cooldown(deployment=d, until=now + 5, status=429) for d in (a, b, backup)}
    )
    with pytest.raises(RateLimited) as waiting:
        decide.choose(router, only_limits, _env("main"), pinned=None)
    assert waiting.value.code == "deployments_rate_limited"


def test_a_failed_last_resort_says_when_the_deployment_is_tried_again() -> None:
    """A one-deployment route whose provider fails: the last resort is tried, fails, and its
    failure is the answer with ``Retry-After`` until the cooldown ends (an explorer got 40
    502s without one while the deployment cooled 5 s, though the docs said so). A provider's
    429 whose ``Retry-After`` it could not read gets the cooldown's wait; one that asks for a
    day gets the longest cooldown, after which the deployment is tried again anyway."""
    router = Router(_two_route_table())
    backup = deployment_id("b", "m2")
    now = time.time()
    book = Cooldowns({backup: Cooldown(deployment=backup, until=now + 5, status=500)})
    assert decide.choose(router, book, _env("backup"), pinned=None).id == backup
    after = _env("backup", tried=(backup,), last_status=502, errors=f"{backup}: 502 boom")
    with pytest.raises(ProviderError) as failed:
        decide.choose(router, book, after, pinned=None)
    assert failed.value.code == "all_deployments_failed"
    assert failed.value.retry_after == pytest.approx(5, abs=0.5)

    limited = Cooldowns({backup: Cooldown(deployment=backup, until=now + 5, status=429)})
    unread = _env("backup", tried=(backup,), last_status=429)
    with pytest.raises(RateLimited) as no_header:
        decide.choose(router, limited, unread, pinned=None)
    assert no_header.value.retry_after == pytest.approx(5, abs=0.5)
    a_day = _env("backup", tried=(backup,), last_status=429, retry_after=100_000.0)
    cooled = Cooldown(deployment=backup, until=now + MAX_COOLDOWN_S, status=429, asked=True)
    with pytest.raises(RateLimited) as capped:  # the head cooled it as long as it may
        decide.choose(router, Cooldowns({backup: cooled}), a_day, pinned=None)
    assert capped.value.retry_after == pytest.approx(MAX_COOLDOWN_S, abs=0.5)
    # Nothing cooling (the case above passed with or without the cap: the cooldown's own
    # end was the shorter wait): only the cap keeps the provider's day from the client.
    with pytest.raises(RateLimited) as uncooled:
        decide.choose(router, Cooldowns({}), a_day, pinned=None)
    assert uncooled.value.retry_after == MAX_COOLDOWN_S


@pytest.mark.parametrize("asked", [0.0, 0.2])
def test_a_429_asking_no_wait_tells_a_nats_caller_1_s(asked: float) -> None:
    """A provider's ``Retry-After: 0`` (or a date already past) made the wait 0 and the
    shortest wait won: HTTP floors its ``Retry-After`` at 1, but a NATS caller read
    ``Sy-Retry-After: 0`` and came back at once."""
    router = Router(_two_route_table())
    backup = deployment_id("b", "m2")
    env = _env("backup", tried=(backup,), last_status=429, retry_after=asked)
    with pytest.raises(RateLimited) as limited:
        decide.choose(router, Cooldowns({}), env, pinned=None)
    assert limited.value.retry_after == 1.0
    assert error_headers(limited.value)[h.RETRY_AFTER] == "1"


def test_spent_attempts_say_when_the_first_deployment_is_back() -> None:
    """``routing.max_attempts`` spent before the candidates ran out (a reviewer's find: that
    path answered without ``Retry-After`` while the docs promised one), or a pinned request's
    one attempt: the wait is the first cooldown's end, tried deployments included."""
    router = Router(_two_route_table())
    a, b = deployment_id("a", "m1"), deployment_id("b", "m1")
    now = time.time()
    book = Cooldowns(
        {
            a: Cooldown(deployment=a, until=now + 7, status=500),
            b: Cooldown(deployment=b, until=now + 4, status=502),
        }
    )
    env = _env("main", tried=(a, b), last_status=502, errors=f"{a}: 500 x; {b}: 502 y")
    spent = decide.attempts_spent(router, book, env)
    assert isinstance(spent, ProviderError)
    assert spent.retry_after == pytest.approx(4, abs=0.5)
    assert "not tried while cooling" not in spent.message  # left for want of attempts
    pinned = _env("main", tried=(a,), last_status=502, pin=a)
    assert decide.attempts_spent(router, book, pinned).retry_after == pytest.approx(7, abs=0.5)


def test_attempts_spent_on_full_queues_after_a_429_say_when_the_first_deployment_is_back() -> None:
    """`a` answered 429 asking 45 s, `b`'s queue was full (no cooldown: it drains), and that
    spent ``routing.max_attempts``; the fallback is back in 6 s. The client is told 6 s, when
    the route is usable again, as when every attempt was a 429: the head said the last
    provider's 45 s. With no earlier failure the full queue's own 503 stays the answer."""
    router = Router(_two_route_table())
    a, b, backup = deployment_id("a", "m1"), deployment_id("b", "m1"), deployment_id("b", "m2")
    now = time.time()
    book = Cooldowns(
        {
            a: Cooldown(deployment=a, until=now + 45, status=429, asked=True),
            backup: Cooldown(deployment=backup, until=now + 6, status=429, asked=True),
        }
    )
    full = ServiceUnavailable("the queue for deployment b is full", code="queue_full")
    env = _env(
        "main",
        tried=(a, b),
        errors=f"{a}: 429 slow down; {b}: 503 the queue is full",
        last_status=429,
        retry_after=45.0,
    )
    spent = decide.queues_spent(router, book, env, full, failed_before=True)
    assert isinstance(spent, RateLimited)
    assert spent.code == "deployments_rate_limited"
    assert spent.retry_after == pytest.approx(6, abs=0.5)
    assert "not tried while cooling" not in spent.message  # left for want of attempts
    assert decide.queues_spent(router, book, env, full, failed_before=False) is full


def test_a_cooldown_says_whether_the_provider_asked_for_it() -> None:
    now = time.time()
    book = Cooldowns(
        {
            "err": Cooldown(deployment="err", until=now + 5, status=500),
            "limit": Cooldown(deployment="limit", until=now + 5, status=429),
            "told": Cooldown(deployment="told", until=now + 5, status=503, asked=True),
            "over": Cooldown(deployment="over", until=now - 1, status=429),
            "busy": Cooldown(deployment="busy", until=now + 5, status=529),
        }
    )
    names = ("err", "limit", "told", "over", "none", "busy")
    assert [book.asked(d) for d in names] == [False, True, True, False, False, True]


def test_everything_cooling_before_any_attempt_is_503_with_the_shortest_wait() -> None:
    router = Router(_two_route_table())
    now = time.time()
    book = Cooldowns(
        {
            d: Cooldown(deployment=d, until=now + wait, status=500, asked=True)
            for d, wait in (
                (deployment_id("a", "m1"), 30),
                (deployment_id("b", "m1"), 10),
                (deployment_id("b", "m2"), 20),
            )
        }
    )
    with pytest.raises(ServiceUnavailable) as caught:
        decide.choose(router, book, _env("main"), pinned=None)
    assert caught.value.code == "deployments_cooling_down"
    assert caught.value.retry_after == pytest.approx(10, abs=0.5)


def test_all_cooling_for_rate_limits_is_a_429() -> None:
    router = Router(_two_route_table())
    until = time.time() + 5
    book = Cooldowns(
        {
            d: Cooldown(deployment=d, until=until, status=429)
            for d in router.cooling_candidates("main")
        }
    )
    with pytest.raises(RateLimited):
        decide.choose(router, book, _env("main"), pinned=None)


def test_unknown_alias_and_unknown_pin_are_404() -> None:
    router = Router(_two_route_table())
    with pytest.raises(ModelNotFound):
        decide.choose(router, Cooldowns(), _env("nope"), pinned=None)
    with pytest.raises(ModelNotFound):
        decide.choose(router, Cooldowns(), _env("main"), pinned="no-such-deployment")
    pinned = decide.choose(router, Cooldowns(), _env("main"), pinned=deployment_id("b", "m2"))
    assert pinned.id == deployment_id("b", "m2")


def test_backoff_grows_exponentially_within_its_cap_and_jitter() -> None:
    settings = RoutingSettings(backoff_s=0.1, backoff_max_s=1.0)
    rng = random.Random(1)
    for hop, base in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        pause = decide.backoff(hop, settings, rng)
        assert base * 0.5 <= pause <= base * 1.5


def test_cooldown_remaining_and_active_follow_the_clock() -> None:
    book = Cooldowns({"d": Cooldown(deployment="d", until=100.0, status=429)})
    assert book.cooling("d", now=99.0)
    assert not book.cooling("d", now=100.0)
    assert book.remaining("d", now=97.5) == 2.5
    assert book.remaining("other", now=0) == 0.0
    assert [c.deployment for c in book.active(now=50)] == ["d"]
    assert book.active(now=150) == []


async def test_a_cooldown_is_never_shortened_by_a_later_failure() -> None:
    book = CooldownBook(NATS().jetstream())  # not started: cooldowns apply locally only
    longer = await book.cool("dep", 60, status=429, reason="rate limited")
    assert await book.cool("dep", 3, status=502, reason="in flight before the cooldown") == longer
    assert (await book.cool("dep", 120, status=502, reason="failed again")).until > longer.until


def _table(api_base: str) -> RouteTable:
    provider = Provider(kind="openai-compatible", api_base=api_base)
    route = Route(deployments=(Deployment(provider="p", model="m"),))
    return decode_route_table(
        msgspec.json.encode(RouteTable(providers={"p": provider}, routes={"m": route}))
    )


def test_model_proxy_targets_follow_every_route_table_revision() -> None:
    """Python reuses a freed table's id for a later table: targets must come from the new one."""
    nc = NATS()  # never connected: building targets does no I/O
    tables = [_table("http://v1.test/v1")]
    handler = Handler(
        nc,
        settings=Settings(),
        adapters=Adapters(),
        keys=SecretCache(nc, ttl=1),
        heartbeats=Heartbeats(nc, keepalive_s=1, progress_s=1),
        table=lambda: tables[-1],
    )
    dep = deployment_id("p", "m")
    for version in range(1, 50):
        api_base = f"http://v{version}.test/v1"
        tables[:] = [_table(api_base)]  # the previous revision is freed
        target = handler.target(dep)
        assert target is not None
        assert target.provider.api_base == api_base


def test_a_malformed_retry_after_never_raises() -> None:
    for bad in ("soon", "inf", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"):
        headers = {
            h.RETRY_AFTER: bad,
            h.LAST_STATUS: "429",
            h.ERRORS: "x: 429 slow down",
            h.TRIED: "x",
            h.ALIAS: "alias",
        }
        assert decide.exhausted(Envelope.decode(headers)).retry_after is None


def test_a_providers_retry_after_of_zero_still_tells_the_client_when() -> None:
    """A provider's `Retry-After: 0` (or a date already past) read as no wait, and the 429
    went out with no Retry-After at all (an explorer's find); it says 1 s now, to a NATS
    caller too (its ``Sy-Retry-After`` said 0)."""
    headers = {
        h.RETRY_AFTER: "0",
        h.LAST_STATUS: "429",
        h.ERRORS: "x: 429 slow down",
        h.TRIED: "x",
        h.ALIAS: "alias",
    }
    refused = decide.exhausted(Envelope.decode(headers))
    assert refused.retry_after == 1
    assert error_response(refused).headers["Retry-After"] == "1"
    assert error_headers(refused)[h.RETRY_AFTER] == "1"


def test_the_one_attempt_on_a_removed_deployment_says_so() -> None:
    """A request queued for a deployment since taken out of its route, with nothing else to
    try (its route deleted too, or pinned), was reported as a missing provider key."""
    base = {h.LAST_STATUS: "503", h.TRIED: "old--dep", h.ALIAS: "gone"}
    removed = {**base, h.ERRORS: "old--dep: 503 deployment old--dep is no longer routed"}
    assert decide.exhausted(Envelope.decode(removed)).code == "deployment_removed"
    keyless = {**base, h.ERRORS: "old--dep: 503 provider key `k` is unavailable"}
    assert decide.exhausted(Envelope.decode(keyless)).code == "secret_unavailable"


def test_secret_holders_never_print_the_value() -> None:
    value = "sk-repr-" + secrets.token_hex(12)
    for holder in (StoredSecret("n", value, 1), SecretPayload("n", 1, value)):
        assert value not in repr(holder)
        assert value not in str(holder)
        assert value not in f"{holder}"


def test_a_request_whose_sy_tried_is_full_is_answered_by_the_head() -> None:
    """32 deployments refused a field (no attempt), then the 33rd's queue was full: placed
    on a 34th, Sy-Tried would hold 33, which no model-proxy reads (it drops the message as
    malformed; the caller waited for its deadline). The head answers instead, as the
    model-proxy of a 33rd refusal does: "tried no further"."""
    refused = tuple(f"gone--m{n:02d}" for n in range(MAX_TRIED))
    full = ServiceUnavailable("the queue for deployment b is full", code="queue_full")
    env = _env("main", tried=(*refused, "b"), unfit=refused, last_status=503)
    assert decide.tried_full(env)
    assert not decide.tried_full(env.with_(tried=refused))  # a 33rd may still be placed
    router, book = Router(_two_route_table()), Cooldowns({})
    answer = decide.queues_spent(router, book, env, full, failed_before=False)
    assert (answer.status, answer.code) == (503, "queue_full")
    assert answer.message.endswith(f"tries at most {MAX_TRIED + 1} deployments)")
