"""Header names of the wire contract (DESIGN §4) and helpers to read them.

Bodies stay OpenAI JSON bytes; everything Switchyard adds travels in these headers.
"""

from __future__ import annotations

import math
import re

REQUEST_ID = "Sy-Request-Id"  # also the idempotency key across attempts
ATTEMPT = "Sy-Attempt"  # 1-based; a client retry bumps it, so does a reroute
DEADLINE = "Sy-Deadline"  # unix milliseconds; every hop drops work past it
# Unix milliseconds: when the caller stops waiting for this attempt's ``accepted`` (it sends the
# request again or gives up). A head that picks the attempt up later drops it unserved.
ACCEPT_BY = "Sy-Accept-By"
KEY_ID = "Sy-Key-Id"  # client key id, set by ingress after auth
TENANT = "Sy-Tenant"  # team/owner of that key
BUDGET_PERIOD = "Sy-Budget-Period"  # the key's budget period (head -> usage event)
KEY_HASH = "Sy-Key-Hash"  # SHA-256 of the client key (ingress -> head, for the policy re-check)
# Set by the head alone (a caller's is overwritten): the hash of the secret the caller presented
# when it is not the key's current one (an old secret in a rotation's grace, named only on a
# request made during it), so that a cancel proved with that secret still ends the request, for
# the request's whole life: a proof is per request id, known only to the request's maker.
PRESENTED_HASH = "Sy-Presented-Hash"
# What usage is billed under when the caller's own id cannot be trusted to be unique (set by
# the head for NATS callers: their id plus a suffix of its own).
USAGE_ID = "Sy-Usage-Id"
USAGE = "Sy-Usage"  # prompt,completion,total tokens (on final replies)
# "1" beside Sy-Usage when it is Switchyard's estimate, the provider having reported none.
USAGE_ESTIMATED = "Sy-Usage-Estimated"
AUTHORIZATION = "Authorization"  # internal callers present their client key here
REPLY = "Sy-Reply"  # the caller's reply subject, carried through JetStream
STATUS = "Sy-Status"  # HTTP-like status on replies
SEQ = "Sy-Seq"  # chunk sequence number, 0-based
KIND = "Sy-Kind"  # reply message kind: chunk | part | final | keepalive | error
# On a request: its caller reads a whole (non-streamed) answer larger than one bus message sent
# in parts (``Sy-Kind: part``), up to this many bytes (docs/nats-api.md, "Answers in parts").
# Without it such an answer is a 413 ``answer_too_large``, as for callers older than parts.
PARTS_MAX = "Sy-Parts-Max"
# "1" on a request: its caller acknowledges each part (an empty message to the part's reply
# subject), so its model-proxy keeps at most two parts unacknowledged (flow control, docs/
# nats-api.md, "Answers in parts"). Without it parts go out back-to-back, as to older callers.
PARTS_ACK = "Sy-Parts-Ack"
# "1" on a keep-alive: the provider's stream has begun, its opening (a role alone) held back
# until its first content (an edge may start an SDK's stream then). Older callers ignore it.
BEGUN = "Sy-Begun"
# "1" on an ``error`` that ends a Responses or Messages stream whose last chunk already told the
# client of the failure in its own dialect (an ``error`` event): a relay adds no second one.
IN_STREAM = "Sy-Error-In-Stream"
OP = "Sy-Op"  # chat | complete | embed (on dispatched requests)
ALIAS = "Sy-Alias"  # the alias the client asked for (on dispatched requests)
DEPLOYMENT = "Sy-Deployment"  # which deployment answered
# On ``accepted``: which placement of the request it names (1, 2, ...: a reroute or a removal
# bounce queues it again), so a caller keeps the latest though an earlier one arrives later.
# On a model-proxy's keep-alives too (the placement it serves): one of an earlier placement
# than the last ``accepted``'s came late, and is ignored.
PLACEMENT = "Sy-Placement"
ATTEMPTS = "Sy-Attempts"  # how many attempts it took
TRIED = "Sy-Tried"  # deployments already tried, comma-separated (reroutes)
ERRORS = "Sy-Errors"  # on a reroute: "<deployment>: <status> <message>; ..." so far
LAST_STATUS = "Sy-Last-Status"  # on a reroute: the failed attempt's status
# On a reroute, when known: the provider's own error status (a 500 where Sy-Last-Status says the
# 502 of any provider 5xx), which the cooldown records. Absent from older model-proxies.
UPSTREAM_STATUS = "Sy-Upstream-Status"
# On a reroute: the deployments of Sy-Tried that refused the request for a field their provider
# has no place for (no provider call, no cooldown, no attempt counted), comma-separated, and
# the last such refusal's error code and field. Absent from older model-proxies.
UNFIT = "Sy-Unfit"
UNFIT_CODE = "Sy-Unfit-Code"
UNFIT_PARAM = "Sy-Unfit-Param"
# Removal bounces (DESIGN §3, docs/routing.md): a request handed back unserved because the
# deployment it was queued for had left every route. Not attempts: they never enter Sy-Tried.
# Which limit set Sy-Deadline of a bus caller's request (`caller`, `capped`, `default`), set by
# the head, so that a 504 of the deadline can say it. Absent for the edges' (they name theirs).
DEADLINE_BY = "Sy-Deadline-By"
BOUNCES = "Sy-Bounces"  # how many times so far (bounded by the heads)
REMOVED = "Sy-Removed"  # on the bounce itself: the deployment that was no longer routed
PIN = "Sy-Pin"  # one specific deployment (admin tests), honoured from the gateway only
RETRY_AFTER = "Sy-Retry-After"  # seconds (fractions too) on 429/503; HTTP: http_retry_after
STREAM = "Sy-Stream"  # "1" when the client asked for a stream
PRIORITY = "Sy-Priority"  # interactive | default | batch (caller's wish; the head decides)
WEIGHT = "Sy-Weight"  # the tenant's fair-share weight (set by the head from the key)
BETA = "Sy-Anthropic-Beta"  # the client's anthropic-beta features (Anthropic's APIs)
NATS_MSG_ID = "Nats-Msg-Id"  # JetStream dedup key
REQUEST_INFO = "Nats-Request-Info"  # added by the server on imports: who asked
TRACEPARENT = "traceparent"
# Unix milliseconds: when a request held for fair order was stored in HOLD (set by control's
# feeder when it moves the request to dispatch), so its queue wait counts the time held.
HELD_SINCE = "Sy-Held-Since"
TRACESTATE = "tracestate"
# On llm.v1.cancel: HMAC-SHA256 of the request id keyed by the request's key hash, in lowercase
# hex (bus/cancel_proof.py): it cancels that one request, and carries neither key nor hash.
CANCEL_PROOF = "Sy-Cancel-Proof"
# What may be named back to a caller as its Authorization scheme (never a key).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,19}")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None for another scheme."""
    scheme, _, value = (authorization or "").partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and token else None


def no_bearer_problem(authorization: str) -> str:
    """What is wrong with an ``Authorization`` value that holds no Bearer token, in words
    for the 401 that refuses it ("" for an empty value: no key was sent at all). Never
    echoes the value, which may be the key itself: only a first word shaped like a scheme
    (letters first, short, not a key's ``sk`` start) is named."""
    scheme, _, rest = authorization.strip().partition(" ")
    if not scheme or (scheme.lower() == "bearer" and not rest.strip()):
        return ""
    if not rest.strip():
        return "Your API key was sent in the Authorization header without the `Bearer ` scheme"
    if _SCHEME.fullmatch(scheme) and not scheme.lower().startswith("sk"):
        return f"The Authorization header uses the `{scheme}` scheme; only `Bearer` is read"
    return "The Authorization header holds no `Bearer` token"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Sy-Retry-After`` value (a fraction too); None when absent or not a
    finite number. 0 means no wait (a provider key not stored: no cooldown); a negative
    value, which Switchyard never sends, reads as 0.

    A provider's HTTP ``Retry-After`` (delay-seconds or an HTTP-date) is read by
    ``upstream_errors.parse_retry_after`` in the model-proxy instead. Never raises: the value
    comes from another process (any NATS caller).
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


# The most an HTTP ``Retry-After`` says (a day): past it a client had better give up than wait.
HTTP_RETRY_AFTER_MAX_S = 86400


def http_retry_after(seconds: float) -> str:
    """``seconds`` as an HTTP ``Retry-After`` value: RFC 9110 allows only delay-seconds, a
    non-negative integer, so a fraction is rounded up (a client told 0.3 s waits 1 s, never 0,
    and one told 1.2 s does not come back before the time it was given) and at least 1."""
    if not math.isfinite(seconds):
        return str(HTTP_RETRY_AFTER_MAX_S)
    return str(min(HTTP_RETRY_AFTER_MAX_S, max(1, math.ceil(seconds))))
