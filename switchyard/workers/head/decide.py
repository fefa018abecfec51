"""The head's decision for one attempt: which deployment, or which clear error.

Pure policy on top of :class:`Router` and the shared cooldowns: skip deployments already tried
or cooling down; on a reroute, cool the failed deployment first and pause (jittered
exponential backoff, never past the deadline); when nothing is left, answer with one error that
names every attempt: 429 when rate limits are the cause (with ``Retry-After``), else 502, or 503
with ``Retry-After`` when every candidate is cooling down before any attempt. An answer whose
last attempt could not call its provider (its key could not be had) says when to retry too
(:data:`KEY_RETRY_S`).

A Responses or Messages request that only a deployment speaking its dialect can serve
(``previous_response_id``, a server tool...: :mod:`switchyard.dialects.native_only`) is never
placed on a deployment that would translate it, when its route has a native one: the translation
would refuse it with a 400 the client does not retry, where the native deployment's own failure
(a 429, Anthropic's 529) says when to come back. The body is read for that only when the pick
would translate and the route mixes both kinds (:meth:`Router.mixed`).

A deployment whose provider had no place for a field of the request (``top_k`` to Anthropic
through litellm) hands it back marked ``unfit`` (``Sy-Unfit``): it joins ``tried`` but cools
nothing and counts toward no limit, so the route's other deployments take the request whatever
the weights picked first; only when none is left that can is the client answered 400, naming
each refusal (:func:`_none_takes`).

A removal bounce (a request handed back unserved because the deployment it was queued for left
every route, see :func:`after_removal`) is no attempt: it neither joins ``tried`` nor counts
toward ``routing.max_attempts``, so a route swapped A->B->A still serves what was queued.
Head and model-proxy each follow the route table on their own, so for a moment they may
disagree on whether a deployment is routed; bounces are therefore bounded (:data:`MAX_BOUNCES`)
and, while this head still routes the bounced deployment, paused (:func:`removal_pause`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from switchyard.bus.envelope import MAX_TRIED, Envelope
from switchyard.config import RoutingSettings
from switchyard.dialects import native_only
from switchyard.errors import (
    ApiError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
)
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.secret_cache import UNAVAILABLE_RETRY_S
from switchyard.schemas.health import MAX_COOLDOWN_S
from switchyard.schemas.routing import Deployment
from switchyard.workers.head.router import Router

# Bounces one request may take before it is answered 503 ``deployment_removed``. An operator
# swapping a route back and forth bounces a queued request once per swap; more than this means
# heads and model-proxies keep disagreeing about the table (one stopped following it).
MAX_BOUNCES = 5
# The first pause after a bounce this head cannot route elsewhere (doubled per bounce, capped):
# a route change reaches every process within milliseconds, so it ends long before the cap.
REMOVAL_PAUSE_S = 0.05
REMOVAL_PAUSE_MAX_S = 1.0
# Retry-After of an answer whose last attempt could not call its provider for want of its key
# (status 503 on the bus; a provider's own 503 arrives as a 502). Nothing cooled: the
# deployment answers as soon as its key is had. A model-proxy that cannot fetch the key tries
# it every second and pulls that deployment again at the latest after this long (key_pause),
# and answers its own 503 ``secret_unavailable`` with the same; a key not stored at all is used
# the moment it is stored, so this is only a pace for retries that would fail until then.
KEY_RETRY_S = UNAVAILABLE_RETRY_S
# Retry-After of a request handed back because its deployment left the routes (the route
# table reaches every process within milliseconds): as :func:`removed_too_often`.
REMOVED_RETRY_S = 1.0
# How the answer to a request no more deployments may be tried for ends (the model-proxy of the
# 33rd ends its 400 the same way: ``modelproxy.reroutes.answer_of``).
TRIED_NO_FURTHER = f" (tried no further: a request tries at most {MAX_TRIED + 1} deployments)"


def backoff(hop: int, settings: RoutingSettings, rng: random.Random | None = None) -> float:
    """Pause before retry number ``hop`` (1-based): exponential, capped, +-50% jitter."""
    base = min(settings.backoff_max_s, settings.backoff_s * 2.0 ** max(0, hop - 1))
    jitter: float = (rng or random).uniform(0.5, 1.5)
    return base * jitter


def after_attempt(
    env: Envelope, settings: RoutingSettings, rng: random.Random | None = None
) -> tuple[float, float]:
    """After a reroute: how long the deployment that failed last cools down, and the pause
    before the next attempt (0: none). A refusal (the deployment had no place for a field,
    ``unfit``) made no attempt: neither, whatever wait its envelope carries on from an earlier
    provider's failure (the answer's). The pause grows with provider attempts only: refusals
    before a real failure do not lengthen it."""
    failed = env.tried[-1] if env.tried else ""
    if failed in env.unfit:
        return 0.0, 0.0
    seconds = settings.cooldown_s if env.retry_after is None else env.retry_after
    if seconds <= 0:  # nothing to wait for (a provider key not stored: never called)
        return 0.0, 0.0
    return (seconds if failed else 0.0), backoff(env.provider_attempts, settings, rng)


def exhausted(
    env: Envelope,
    *,
    retry_after: float | None = None,
    cooling: tuple[str, ...] = (),
    note: str = "",
) -> ApiError:
    """Every attempt failed: one error naming them all; ``retry_after`` when the candidates
    (tried or left untried) are cooling down (the untried ones, ``cooling``, named too), the
    time until the first is back: the answer's ``Retry-After``, a 429's too.
    ``note`` ends the message (why the deployments left were not tried).

    When the last attempt could not call its provider (status 503: its key could not be
    fetched or is not stored) and no candidate cools down, the answer's ``Retry-After`` is
    :data:`KEY_RETRY_S`. A cooling candidate's return stays the answer when there is one: a
    deployment that failed for a passing cause answers again then, where a key comes back
    only when Vault or an operator acts."""
    tried = env.tried
    attempts = env.errors or ", ".join(tried)
    if env.unfit and not env.provider_attempts:
        return _none_takes(env, attempts, retry_after, cooling, note)
    what = "the one attempt" if len(tried) == 1 else f"all {len(tried)} attempts"
    message = f"{what} for `{env.alias}` failed: {attempts}"
    if cooling:  # else the message reads as if they had never existed
        message += f"; not tried while cooling down after errors: {', '.join(cooling[:5])}"
    message += note
    # The provider's wait, never past the longest cooldown (after which the deployment is
    # tried again anyway: a provider's "a day" told a client to wait a day for 5 minutes).
    # (A refusal carries on the wait of the provider before it; its 0 s when none said one
    # is no wait.)
    unfit_last = bool(tried) and tried[-1] in env.unfit
    said = env.retry_after if env.retry_after or not unfit_last else None
    asked = None if said is None else min(said, MAX_COOLDOWN_S)
    if env.last_status == 429:  # the providers' limits, not the key's own (rate_limit_exceeded)
        # When the route is usable again: the first of its cooldowns to end, those the failed
        # attempts just set included (the last provider's own wait said only when that one
        # is back, though another deployment, or a fallback, came back sooner), or the last
        # provider's wait when shorter (it was not cooled: its "0", or a date already past,
        # is a wait too: the client is told 1 s, not left to guess; a NATS caller too, whose
        # Sy-Retry-After is written as it is, where HTTP's Retry-After is at least 1).
        waits = [w for w in (retry_after, asked) if w is not None]
        wait = max(1.0, min(waits)) if waits else None
        return RateLimited(message, code="deployments_rate_limited", retry_after=wait)
    if env.last_status == 529:  # the last deployment was overloaded (Anthropic's 529)
        return ProviderError(
            message,
            provider=",".join(tried),
            status=529,
            type="overloaded_error",
            code="provider_overloaded",
            retry_after=retry_after or asked,
        )
    if len(tried) == 1 and env.last_status == 503:
        # The one attempt could not be made: the route's only usable deployment has no stored
        # provider key (a provider's own 503 arrives as a 502), or it was taken out of its
        # route while the request waited in its queue (as model-proxies older than removal
        # bounces report it). Said as it was before reroutes.
        if "is no longer routed" in attempts:
            wait = REMOVED_RETRY_S if retry_after is None else retry_after
            return ServiceUnavailable(message, code="deployment_removed", retry_after=wait)
        wait = KEY_RETRY_S if retry_after is None else retry_after
        return ServiceUnavailable(message, code="secret_unavailable", retry_after=wait)
    if env.last_status == 503 and retry_after is None:
        # The last deployment tried had no key (or, after earlier failures, a full queue,
        # which is at least no reason to retry at once): it did not cool down.
        retry_after = KEY_RETRY_S
    return ProviderError(
        message,
        provider=",".join(tried),
        code="all_deployments_failed",
        retry_after=retry_after,
    )


def _none_takes(
    env: Envelope,
    attempts: str,
    retry_after: float | None,
    cooling: tuple[str, ...],
    note: str,
) -> ApiError:
    """Every deployment tried had no place for a field of the request (no provider was
    called): the client's 400 with the last refusal's code and field, naming each refusal.
    While deployments that were not tried cool down (one of them may take it), a 503 that
    says when the first is back instead."""
    if cooling:
        message = (
            f"no deployment of `{env.alias}` tried can take this request ({attempts}); "
            f"not tried while cooling down after errors: {', '.join(cooling[:5])}{note}"
        )
        wait = KEY_RETRY_S if retry_after is None else retry_after
        return ServiceUnavailable(message, code="deployments_cooling_down", retry_after=wait)
    return InvalidRequest(
        f"no deployment of `{env.alias}` can take this request: {attempts}{note}",
        code=env.unfit_code or "unsupported_parameter",
        param=env.unfit_param or None,
    )


@dataclass(slots=True)
class Named:
    """Which deployment refused or failed a request, and after how many attempts: the error
    reply's ``Sy-Deployment``/``Sy-Attempts`` (as a model-proxy's error and every answer name
    them), so an operator can tell from the answer where it was refused. The attempts are
    those ``routing.max_attempts`` counts (provider calls and full queues): a deployment that
    refused a field (``unfit``) called no provider, and a bounce is none either.

    Filled where the head gives up, from the attempts it made; left empty when none was made
    (no deployment usable before any attempt, every candidate cooling down, the key or the
    model refused): then no one deployment refused the request (the cooling-down message
    names the deployments it waited for).
    """

    deployment: str = ""
    attempts: int = 0

    def tried(self, env: Envelope) -> None:
        """The last deployment ``env`` tried (a failed attempt or a full queue), of all."""
        if env.tried:
            self.deployment, self.attempts = env.tried[-1], env.provider_attempts

    def refused_by(self, deployment: str, env: Envelope) -> None:
        """``deployment``, which refused this placement (after ``env``'s earlier attempts)."""
        self.deployment, self.attempts = deployment, env.provider_attempts + 1

    def bounced(self, env: Envelope) -> None:
        """The deployment that handed ``env`` back unserved (a bounce is no attempt)."""
        self.deployment, self.attempts = env.removed, env.provider_attempts


def _first_back(
    alias: str,
    router: Router,
    book: Cooldowns,
    tried: tuple[str, ...],
    allowed: Callable[[str], bool] | None = None,
) -> tuple[float | None, tuple[str, ...]]:
    """Seconds until the first candidate of ``alias`` (of those ``allowed``) stops cooling
    down, if any, and which untried candidates cool down. A candidate tried already counts
    for the wait: a route whose every deployment failed (a one-deployment route's last
    resort among them) tells its client when the first is tried again, as its docs say."""
    now = time.time()
    chain = dict.fromkeys([*router.cooling_candidates(alias, allowed), *tried])
    cooling_now = [d for d in chain if book.cooling(d, now)]
    waits = [book.remaining(d, now) for d in cooling_now]
    cooling = tuple(d for d in cooling_now if d not in tried)
    return (max(0.1, min(waits)) if waits else None), cooling


def attempts_spent(
    router: Router, book: Cooldowns, env: Envelope, body: bytes = b"", note: str = ""
) -> ApiError:
    """``routing.max_attempts`` spent (or a pinned request's one attempt): :func:`exhausted`,
    with the time until the first of the route's deployments (or one tried) is back, as when
    :func:`choose` runs out of candidates: of those that can serve ``body`` (a Responses or
    Messages body only a native deployment can serve: not one that would translate it).
    Untried candidates are not named: they were left for want of attempts, not for cooling
    down. ``note`` ends the message."""
    if env.pin:  # only that deployment may serve it
        now = time.time()
        retry_after = max(0.1, book.remaining(env.pin, now)) if book.cooling(env.pin, now) else None
    else:
        allowed = partial(_native, router, env.op) if _needs_native(router, env, body) else None
        retry_after, _ = _first_back(env.alias, router, book, env.tried, allowed)
    return exhausted(env, retry_after=retry_after, note=note)


def queues_spent(
    router: Router,
    book: Cooldowns,
    env: Envelope,
    full: ApiError,
    *,
    failed_before: bool,
    body: bytes = b"",
) -> ApiError:
    """``routing.max_attempts`` ran out on full queues, or ``tried`` on them (:func:`tried_full`):
    the full queue's 503 when no earlier attempt failed at a provider, else
    :func:`attempts_spent`'s one error naming every attempt, whose wait (a 429's too) is when
    the first of the route's deployments, or of its usable fallbacks (that can serve ``body``),
    stops cooling down, not the last provider's own wait. Either ends with
    :data:`TRIED_NO_FURTHER` when ``tried`` is what ran out."""
    note = TRIED_NO_FURTHER if tried_full(env) else ""
    if not failed_before:
        if not note:
            return full
        return ServiceUnavailable(full.message + note, code=full.code, retry_after=full.retry_after)
    return attempts_spent(router, book, env, body, note)


def tried_full(env: Envelope) -> bool:
    """Whether ``env`` lists more deployments in ``tried`` than a model-proxy (or a head) reads
    in ``Sy-Tried`` (:data:`MAX_TRIED`): full queues passed over after the reroute of the 32nd
    deployment. Placed again, it would be dropped as malformed by the model-proxy that pulled
    it, and its caller would wait for its deadline."""
    return len(env.tried) > MAX_TRIED


def all_cooling(
    alias: str,
    router: Router,
    book: Cooldowns,
    allowed: Callable[[str], bool] | None = None,
    note: str = "",
) -> ApiError:
    """Before any attempt, no candidate (of those ``allowed``) is usable right now (all cooling
    down, or none exists); ``note`` ends the message."""
    now = time.time()
    candidates = router.cooling_candidates(alias, allowed)
    waits = [book.remaining(d, now) for d in candidates if book.cooling(d, now)]
    if not waits:
        return ServiceUnavailable(f"no deployment of `{alias}` is available", code="no_deployment")
    retry_after = max(0.1, min(waits))
    cooling = [c for c in book.active(now) if c.deployment in candidates]
    limited = [c for c in cooling if c.status == 429]
    # Which deployment and what status: the provider's own words stay in the admin API and
    # the logs (a cooldown is shared by every tenant; its reason came from one request).
    why = ", ".join(f"{c.deployment} after {c.status}" for c in cooling[:3])
    message = (
        f"every deployment of `{alias}`"
        + (" that can serve this request" if allowed is not None else "")
        + " is cooling down after errors"
        + (f" ({why})" if why else "")
        + f"; retry in {retry_after:.1f}s"
        + note
    )
    if limited and len(limited) == len(waits):
        return RateLimited(message, code="deployments_rate_limited", retry_after=retry_after)
    return ServiceUnavailable(message, code="deployments_cooling_down", retry_after=retry_after)


def choose(
    router: Router,
    book: Cooldowns,
    env: Envelope,
    *,
    pinned: str | None,
    avoid: str = "",
    body: bytes = b"",
) -> Deployment:
    """The deployment for this attempt; another than ``avoid`` (a deployment that just
    bounced the request) while the route has one. A Responses or Messages ``body`` that only
    a native deployment can serve skips the deployments that would translate it.

    Raises:
        ModelNotFound: unknown alias (or pinned deployment).
        ApiError: nothing usable is left (see :func:`exhausted` and :func:`all_cooling`).
    """
    if pinned:
        return router.pinned(pinned)
    deployment = _pick(router, book, env, avoid)
    allowed: Callable[[str], bool] | None = None
    note = ""
    if deployment is None or router.translates(deployment.id, env.op):
        need = _needs_native(router, env, body)
        if need:
            allowed = partial(_native, router, env.op)
            note = _native_note(env.op, need)
            if deployment is not None:
                deployment = _pick(router, book, env, avoid, allowed)
    if deployment is None and not env.provider_attempts:  # (a field refused is no attempt)
        deployment = _last_resort(router, book, env, allowed)
    if deployment is not None:
        return deployment
    if env.tried:  # none left untried, or all of those cool down: report the real failures
        retry_after, cooling = _first_back(env.alias, router, book, env.tried, allowed)
        raise exhausted(env, retry_after=retry_after, cooling=cooling, note=note)
    raise all_cooling(env.alias, router, book, allowed, note)


def keeps_native(
    router: Router, env: Envelope, body: bytes, chosen: Deployment, other: Deployment
) -> bool:
    """Whether ``chosen`` must not give ``env`` to ``other`` (batch work moving to spare
    capacity): ``chosen`` serves it natively, ``other`` would translate what it cannot."""
    return (
        router.translates(other.id, env.op)
        and not router.translates(chosen.id, env.op)
        and bool(native_only.needs_native(env.op, body))
    )


def _pick(
    router: Router,
    book: Cooldowns,
    env: Envelope,
    avoid: str,
    allowed: Callable[[str], bool] | None = None,
) -> Deployment | None:
    tried = (*env.tried, avoid) if avoid else env.tried
    deployment = router.choose(env.alias, tried=tried, cooling=book.cooling, allowed=allowed)
    if deployment is None and avoid:
        deployment = router.choose(
            env.alias, tried=env.tried, cooling=book.cooling, allowed=allowed
        )
    return deployment


def _last_resort(
    router: Router,
    book: Cooldowns,
    env: Envelope,
    allowed: Callable[[str], bool] | None = None,
) -> Deployment | None:
    """When every candidate cools down before a request's first attempt: the one whose
    cooldown ends first among those Switchyard cooled on its own after an error (a 5xx, a
    timeout), or None.

    A cooldown steers requests to the route's other deployments; it does not refuse one that
    only cooling deployments can serve: one failing request (any tenant's, perhaps a
    malformed one) would otherwise refuse every request of a one-deployment route for
    ``routing.cooldown_s``. One try per request: when it fails too, the answer is its own
    failure (:func:`exhausted`), so a route whose every deployment fails costs each request
    one provider call, not ``routing.max_attempts``. A wait the provider asked for (a 429, a
    529, its ``Retry-After``) still refuses (:func:`all_cooling`)."""
    now = time.time()
    options = [
        d
        for d in router.candidates(env.alias, allowed)
        if d.id not in env.tried and not book.asked(d.id, now)
    ]
    if not options:
        return None
    return min(options, key=lambda d: book.remaining(d.id, now))


def _needs_native(router: Router, env: Envelope, body: bytes) -> str:
    """What in ``body`` needs a native deployment, when ``env``'s route has one as well as
    translating ones ("" otherwise: then the body is not read)."""
    if not body or not router.mixed(env.alias, env.op):
        return ""
    return native_only.needs_native(env.op, body)


def _native(router: Router, op: str, deployment: str) -> bool:
    return not router.translates(deployment, op)


def _native_note(op: str, need: str) -> str:
    api = "OpenAI Responses" if native_only.DIALECT_OF[op] == "responses" else "Anthropic Messages"
    return f"; {need} needs a native {api} API: deployments that translate it were not tried"


def removal_pause(bounces: int) -> float:
    """Seconds to wait for this head's route table to change before bounce ``bounces``
    (1-based) is queued again where it came from."""
    return min(REMOVAL_PAUSE_MAX_S, REMOVAL_PAUSE_S * 2.0 ** max(0, bounces - 1))


def removed_too_often(env: Envelope) -> ServiceUnavailable:
    """The answer to a request bounced past :data:`MAX_BOUNCES` (or pinned to the deployment
    that bounced it): 503, since nothing failed that a retry later would not get past."""
    if env.pin:
        message = (
            f"deployment {env.removed} was taken out of the routes while the request waited "
            "in its queue"
        )
    else:
        message = (
            f"the request for `{env.alias}` was handed back unserved {env.bounces} times: "
            f"{env.removed} was no longer routed when a model proxy took it from its queue "
            "(the route table is changing); retry"
        )
    return ServiceUnavailable(message, code="deployment_removed", retry_after=1.0)


def after_removal(router: Router, book: Cooldowns, env: Envelope) -> tuple[str, float]:
    """What to do with a removal bounce: the deployment to avoid for the next placement ("" for
    none) and how long to wait for this head's route table to change first (0 for not at all).

    A model-proxy bounces a request once its route table no longer lists the deployment. When
    this head's table does not list it either, they agree: the request is routed by the table
    now. When this head's table still lists it, one of the two tables is behind the other (a
    change reaches each process on its own): another deployment of the route takes the request
    if there is one; else the head waits for its table to change, at most a short, growing
    pause, and routes by whatever table it has then (the deployment may be routed again, and
    the model-proxy the one behind).

    Raises:
        ServiceUnavailable: ``deployment_removed``, past :data:`MAX_BOUNCES` or for a request
            pinned to the deployment (see :func:`removed_too_often`).
        ModelNotFound: the alias is no longer routed.
    """
    if env.pin or env.bounces > MAX_BOUNCES:
        raise removed_too_often(env)
    if router.alias_of(env.removed) is None:
        return "", 0.0
    others = router.choose(env.alias, tried=(*env.tried, env.removed), cooling=book.cooling)
    if others is not None:
        return env.removed, 0.0
    return "", removal_pause(env.bounces)
