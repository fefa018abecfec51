"""The request envelope: every header Switchyard adds to a request, decoded once per hop.

A request's body stays the client's JSON bytes; what the platform knows about it (who sent it,
until when it may run, which deployments it tried, where to answer) travels in NATS headers
(DESIGN §4). Each hop turns those headers into one frozen :class:`Envelope` with
:meth:`Envelope.decode`, works on typed fields, derives a changed copy with :meth:`Envelope.with_`
when it adds something, and writes headers again with :meth:`Envelope.encode`. No hop parses a
header a second time, and none mutates a header dict in place.

Header values come from outside (a client-zone caller writes them), so decoding is strict: a
value that is not what the contract says (not a number, past its size limit, a malformed trace
context) raises :class:`MalformedHeader`, a 400 naming the header. Headers the contract calls
optional may be left out; a missing request id is generated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from nats.nuid import NUID

from switchyard.bus import headers as h
from switchyard.errors import InvalidRequest
from switchyard.schemas.scheduling import RANK

__all__ = [
    "Deadline",
    "Envelope",
    "MalformedHeader",
    "new_request_id",
    "refuse_misspelled",
    "trace_context",
]

# Size limits per header value (characters). Generous for honest callers, small enough that a
# hostile one cannot make every hop carry kilobytes.
_LIMITS = {
    h.REQUEST_ID: 128,
    h.KEY_ID: 128,
    h.KEY_HASH: 64,
    h.PRESENTED_HASH: 64,
    h.USAGE_ID: 160,
    h.TENANT: 256,
    h.BUDGET_PERIOD: 16,
    h.OP: 16,
    h.ALIAS: 256,
    h.REPLY: 256,
    h.DEPLOYMENT: 128,
    h.PIN: 128,
    h.REMOVED: 128,
    h.ERRORS: 1024,
    h.UNFIT_CODE: 64,
    h.DEADLINE_BY: 16,
    h.UNFIT_PARAM: 256,
    h.TRACESTATE: 512,
    h.PRIORITY: 16,
    h.WEIGHT: 16,
    h.AUTHORIZATION: 1024,
    h.BETA: 1024,
    h.PARTS_MAX: 9,
    h.PARTS_ACK: 1,
}
MAX_TRIED = 32
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BETA = re.compile(r"[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_OPS = frozenset(
    {"", "chat", "complete", "embed", "responses", "messages", "count_tokens", "input_tokens"}
)
_nuid = NUID()
# Every Sy-* header of the contract, and Authorization, by its lowercased name. NATS header
# names are case-sensitive: a client that lowercases them (``sy-request-id``, ``authorization``:
# usual in Node) would be ignored unheard.
_SPELLINGS = {
    value.lower(): value
    for name, value in vars(h).items()
    if name.isupper() and isinstance(value, str) and value.startswith("Sy-")
} | {h.AUTHORIZATION.lower(): h.AUTHORIZATION}
# Every header the contract names, as spelled, with its size limit (0: none checked here). A
# name not in it costs one lowercasing to tell a misspelled contract header from another one.
_KNOWN = (
    dict.fromkeys(_SPELLINGS.values(), 0)
    | dict.fromkeys((h.TRACEPARENT, h.NATS_MSG_ID, h.REQUEST_INFO), 0)
    | _LIMITS
)


def new_request_id() -> str:
    """A fresh, unique request id (NUID: 22 characters, no coordination needed)."""
    return _nuid.next().decode()


def trace_context(traceparent: str, tracestate: str) -> tuple[str, str]:
    """The W3C trace context an HTTP client sent, or empty strings when it is not valid (a
    bad ``traceparent`` is ignored, as W3C Trace Context asks, rather than refused)."""
    if not _TRACEPARENT.fullmatch(traceparent) or traceparent.startswith("ff"):
        return "", ""
    return traceparent, tracestate[: _LIMITS[h.TRACESTATE]]


class MalformedHeader(InvalidRequest):
    """A request header does not follow the wire contract (400, ``param`` names the header)."""

    code = "invalid_header"

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"header {header}: {problem}", param=header)
        self.header = header


class Deadline:
    """The moment a request stops being worth working on, as unix milliseconds.

    On the wire it is ``Sy-Deadline`` (one format: an integer of unix ms); every hop compares it
    with its own clock, so all hops agree on one instant without sharing a loop.
    """

    __slots__ = ("unix_ms",)

    def __init__(self, unix_ms: int) -> None:
        self.unix_ms = unix_ms

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(int((time.time() + seconds) * 1000))

    @classmethod
    def parse(cls, value: str) -> Deadline:
        """The deadline of a ``Sy-Deadline`` header value.

        Raises:
            MalformedHeader: not a positive integer of milliseconds, or one so small it can
                only be seconds.
        """
        return cls(unix_ms(h.DEADLINE, value))

    def capped(self, seconds: float) -> Deadline:
        """This deadline, or the one ``seconds`` from now if that comes first."""
        most = Deadline.after(seconds)
        return most if most.unix_ms < self.unix_ms else self

    def header(self) -> str:
        return str(self.unix_ms)

    @property
    def timestamp(self) -> float:
        """Unix seconds."""
        return self.unix_ms / 1000

    def remaining(self, now: float | None = None) -> float:
        """Seconds left (negative once passed); ``now`` is unix seconds."""
        return self.unix_ms / 1000 - (time.time() if now is None else now)

    def passed(self, now: float | None = None) -> bool:
        return self.remaining(now) <= 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Deadline) and other.unix_ms == self.unix_ms

    def __hash__(self) -> int:
        return hash(self.unix_ms)

    def __repr__(self) -> str:
        return f"Deadline({self.unix_ms})"


# Below this a unix time can only be in seconds: as milliseconds it would be before March 1973,
# as seconds it is past the year 5000. Unix seconds for milliseconds is an easy mix-up, and read
# as milliseconds they are a moment in January 1970: the request was refused as late (a 504).
_SECONDS_BELOW = 10**11


def unix_ms(name: str, value: str) -> int:
    """The unix milliseconds of header ``name``'s ``value``.

    Raises:
        MalformedHeader: not a positive integer, or one that can only be seconds.
    """
    if not value.isdecimal() or len(value) > 16 or int(value) <= 0:
        raise MalformedHeader(name, "must be unix time in milliseconds")
    if int(value) < _SECONDS_BELOW:
        raise MalformedHeader(
            name,
            f"must be unix time in milliseconds, and {value} can only be seconds "
            f"(in milliseconds: {value}000)",
        )
    return int(value)


# How far hosts' clocks may disagree (the feeder's lease assumes the same, docs/routing.md):
# an attempt is stale only this long after the caller's ``Sy-Accept-By`` by the head's clock.
CLOCK_SKEW_S = 2.0


def given_up_for(headers: Mapping[str, str] | None, now: float | None = None) -> float:
    """Seconds since the caller of this attempt stopped waiting for it to be accepted, by
    ``Sy-Accept-By`` less :data:`CLOCK_SKEW_S` (0 while it still waits, or names no time).

    A head that reaches a request that late (it was paused, or busy past its
    ``max_in_flight``) serves a copy nobody reads: the caller has sent the request again, to
    be served by whichever head took that copy, or has told its own caller it failed.

    Raises:
        MalformedHeader: the value is not unix time in milliseconds.
    """
    value = (headers or {}).get(h.ACCEPT_BY)
    if not value:
        return 0.0
    late = (time.time() if now is None else now) - unix_ms(h.ACCEPT_BY, value) / 1000 - CLOCK_SKEW_S
    return max(0.0, late)


# A reroute's statuses: the attempt's, and its provider's own (an error status) when known.
_STATUSES = (
    (h.LAST_STATUS, "last_status", 100),
    (h.UPSTREAM_STATUS, "upstream_status", 400),
)


def _statuses(headers: Mapping[str, str]) -> dict[str, int]:
    """The status fields of a reroute's headers (none for other messages)."""
    found: dict[str, int] = {}
    for name, field, low in _STATUSES:
        if (value := headers.get(name)) is not None:
            found[field] = _count(name, value, low=low, high=599)
    return found


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """What a request carries besides its body.

    Set by the caller (or its edge): ``request_id``, ``attempt``, ``deadline``, ``traceparent``/
    ``tracestate``, ``authorization`` (internal callers), ``key_hash`` (edges), ``pin``
    (gateway only). Overwritten by the head after it authorised the request: ``key_id``,
    ``tenant``, ``key_hash``, ``presented_hash`` (the hash of the secret the caller presented,
    when not the key's current one: a cancel proved with it counts, for the request's whole
    life), ``budget_period``,
    ``usage_id``; then ``op``, ``alias``,
    ``reply``, ``stream``, ``deadline_by`` (which limit set a bus caller's ``deadline``).
    Added on the dispatch hop: ``deployment``; on a reroute: ``tried``, ``errors``,
    ``last_status``, ``upstream_status`` (0: unknown, or from an older model-proxy),
    ``retry_after``; ``unfit`` (those of ``tried`` whose provider had no place for a field of
    the request: no attempt, see docs/routing.md) with the last such refusal's
    ``unfit_code`` and ``unfit_param``. A removal bounce (the deployment left every route while
    the request was queued for it) is no attempt: it adds to ``bounces`` instead, and names the
    deployment in ``removed`` (the head clears it before it queues the request again).
    ``priority`` is the caller's wish until the head decides it (the key's default and ceiling
    apply); ``weight`` is the head's only. ``beta`` is the client's ``anthropic-beta``
    features, passed to Anthropic's own API. ``parts_max`` is the caller's: the most bytes of
    a whole answer it reads in parts (ASCII digits, checked here so the head refuses a
    malformed one at once; kept as sent, read by the model-proxy with
    :func:`switchyard.bus.parts.announced`). ``parts_ack``: the caller acknowledges each part
    (``Sy-Parts-Ack: 1``), so parts go out with flow control.
    """

    request_id: str
    attempt: int = 1
    deadline: Deadline | None = None
    key_id: str = ""
    tenant: str = ""
    key_hash: str = ""
    presented_hash: str = ""
    budget_period: str = ""
    usage_id: str = ""
    authorization: str = ""
    op: str = ""
    alias: str = ""
    reply: str = ""
    stream: bool = False
    deployment: str = ""
    pin: str = ""
    tried: tuple[str, ...] = ()
    errors: str = ""
    last_status: int = 0
    upstream_status: int = 0
    retry_after: float | None = None
    unfit: tuple[str, ...] = ()
    unfit_code: str = ""
    unfit_param: str = ""
    deadline_by: str = ""
    bounces: int = 0
    removed: str = ""
    traceparent: str = ""
    tracestate: str = ""
    priority: str = ""
    weight: float = 1.0
    beta: str = ""
    parts_max: str = ""
    parts_ack: bool = False

    @classmethod
    def decode(cls, headers: Mapping[str, str] | None) -> Envelope:
        """The envelope of a request's headers; unknown headers are ignored.

        Raises:
            MalformedHeader: a header value breaks the contract (the 400 names it), or a
                contract header is spelled in another case (``sy-deadline``, ``SY-PRIORITY``,
                ``authorization``): NATS header names are case-sensitive, and ignoring it would
                serve the request without it.
        """
        if not headers:
            return cls(request_id=new_request_id())
        get = headers.get
        fields: dict[str, Any] = {}
        _check_names(headers)
        request_id = get(h.REQUEST_ID)
        if request_id:
            if not _SAFE_ID.fullmatch(request_id):
                raise MalformedHeader(h.REQUEST_ID, "use 1-128 of A-Z a-z 0-9 . _ : -")
        else:
            request_id = new_request_id()
        if (value := get(h.ATTEMPT)) is not None:
            fields["attempt"] = _count(h.ATTEMPT, value, low=1, high=1000)
        if value := get(h.DEADLINE):
            fields["deadline"] = Deadline.parse(value)
        for name, field in _TEXT_FIELDS:
            if value := get(name):
                fields[field] = value
        if (value := fields.get("parts_max")) and not (value.isascii() and value.isdigit()):
            raise MalformedHeader(h.PARTS_MAX, "must be a whole number of bytes (digits 0-9)")
        if fields.get("op", "") not in _OPS:
            raise MalformedHeader(h.OP, f"unknown operation {fields['op']!r}")
        for name, field in _FLAGS:
            if get(name) == "1":
                fields[field] = True
        if value := get(h.PRIORITY):
            if value not in RANK:
                raise MalformedHeader(h.PRIORITY, "use interactive, default or batch")
            fields["priority"] = value
        if value := get(h.WEIGHT):
            fields["weight"] = _weight(value)
        if value := get(h.BETA):
            fields["beta"] = beta_features(value, h.BETA)
        for name, field in ((h.TRIED, "tried"), (h.UNFIT, "unfit")):
            if value := get(name):
                ids = tuple(t for t in value.split(",") if t)
                if len(ids) > MAX_TRIED or any(len(t) > 128 for t in ids):
                    raise MalformedHeader(name, f"at most {MAX_TRIED} deployment ids")
                fields[field] = ids
        fields.update(_statuses(headers))
        if value := get(h.RETRY_AFTER):
            fields["retry_after"] = h.parse_retry_after(value)
        if value := get(h.BOUNCES):  # only a bounced request has either header
            fields["bounces"] = _count(h.BOUNCES, value, low=1, high=1000)
            if removed := get(h.REMOVED):
                fields["removed"] = removed
        if value := get(h.TRACEPARENT):
            if not _TRACEPARENT.fullmatch(value):
                raise MalformedHeader(h.TRACEPARENT, "not a W3C traceparent")
            fields["traceparent"] = value
            if state := get(h.TRACESTATE):
                fields["tracestate"] = state
        return cls(request_id=request_id, **fields)

    def encode(self) -> dict[str, str]:
        """The headers of this envelope (fields at their defaults are left out)."""
        out = {h.REQUEST_ID: self.request_id, h.ATTEMPT: str(self.attempt)}
        if self.deadline is not None:
            out[h.DEADLINE] = self.deadline.header()
        for name, field in _TEXT_FIELDS:
            value = getattr(self, field)
            if value:
                out[name] = value
        for name, field in _FLAGS:
            if getattr(self, field):
                out[name] = "1"
        if self.priority:
            out[h.PRIORITY] = self.priority
        if self.weight != 1.0:
            out[h.WEIGHT] = f"{self.weight:g}"
        if self.beta:
            out[h.BETA] = self.beta
        if self.tried:
            out[h.TRIED] = ",".join(self.tried)
        if self.unfit:
            out[h.UNFIT] = ",".join(self.unfit)
        if self.last_status:
            out[h.LAST_STATUS] = str(self.last_status)
        if self.upstream_status:
            out[h.UPSTREAM_STATUS] = str(self.upstream_status)
        if self.retry_after is not None:
            out[h.RETRY_AFTER] = f"{self.retry_after:g}"
        if self.bounces:
            out[h.BOUNCES] = str(self.bounces)
            if self.removed:
                out[h.REMOVED] = self.removed
        if self.traceparent:
            out[h.TRACEPARENT] = self.traceparent
            if self.tracestate:
                out[h.TRACESTATE] = self.tracestate
        return out

    def with_(self, **changes: Any) -> Envelope:
        """A copy with ``changes`` applied (the envelope itself never changes)."""
        return msgspec.structs.replace(self, **changes)

    @property
    def billing_id(self) -> str:
        """What this request's usage is billed under: each one is billed once, so a re-send
        or redelivery of the same request is not billed twice (see ``usage_id``)."""
        return self.usage_id or self.request_id

    def remaining(self, default: float) -> float:
        """Seconds until the deadline, or ``default`` when the request carries none."""
        return default if self.deadline is None else self.deadline.remaining()

    @property
    def provider_attempts(self) -> int:
        """How many provider attempts failed so far: ``tried`` but those ``unfit`` (what
        ``routing.max_attempts`` counts)."""
        return len(self.tried) - len(set(self.unfit) & set(self.tried))

    @property
    def placement(self) -> int:
        """Which placement in a queue this is (1 on the first): each reroute and each removal
        bounce adds one (``Sy-Placement`` on the head's ``accepted``)."""
        return len(self.tried) + self.bounces + 1

    @property
    def hop(self) -> int:
        """How many deployments were tried before this attempt (0 on the first); removal
        bounces are not tries (see ``bounces``)."""
        return len(self.tried)


# Plain text headers and the fields they fill (decoded and encoded as is).
_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    (h.KEY_ID, "key_id"),
    (h.TENANT, "tenant"),
    (h.KEY_HASH, "key_hash"),
    (h.PRESENTED_HASH, "presented_hash"),
    (h.BUDGET_PERIOD, "budget_period"),
    (h.USAGE_ID, "usage_id"),
    (h.AUTHORIZATION, "authorization"),
    (h.OP, "op"),
    (h.ALIAS, "alias"),
    (h.REPLY, "reply"),
    (h.DEPLOYMENT, "deployment"),
    (h.PIN, "pin"),
    (h.ERRORS, "errors"),
    (h.UNFIT_CODE, "unfit_code"),
    (h.UNFIT_PARAM, "unfit_param"),
    (h.DEADLINE_BY, "deadline_by"),
    (h.PARTS_MAX, "parts_max"),
)

# Flags: "1" on the wire when set, left out when not.
_FLAGS = ((h.STREAM, "stream"), (h.PARTS_ACK, "parts_ack"))


def _check_names(headers: Mapping[str, str]) -> None:
    """Refuse a contract header past its size limit, or spelled in another case. One dict
    lookup per header; only a header outside the contract costs a lowercasing more.

    Raises:
        MalformedHeader: naming the header as sent.
    """
    for name, raw in headers.items():
        limit = _KNOWN.get(name)
        if limit is None:  # not the contract's: ignored, unless it is spelled in another case
            if (right := _SPELLINGS.get(name.lower())) is not None:
                raise _misspelled(name, right)
        elif limit and len(raw) > limit:
            raise MalformedHeader(name, f"longer than {limit} characters")


def refuse_misspelled(headers: Mapping[str, str] | None) -> None:
    """Refuse a contract header (``Sy-*``, ``Authorization``) spelled in another case
    (:meth:`Envelope.decode` does it too, for headers it decodes).

    Raises:
        MalformedHeader: naming the header as sent and its right spelling.
    """
    for name in headers or ():
        right = _SPELLINGS.get(name.lower())
        if right is not None and right != name:
            raise _misspelled(name, right)


def _misspelled(name: str, right: str) -> MalformedHeader:
    return MalformedHeader(name, f"NATS header names are case-sensitive: spell it {right}")


def beta_features(value: str, name: str) -> str:
    """An ``anthropic-beta`` value: comma-separated feature names, spaces dropped.

    Raises:
        MalformedHeader: another character, or longer than 1024 characters.
    """
    features = ",".join(f.strip() for f in value.split(",") if f.strip())
    if len(value) > _LIMITS[h.BETA] or not _BETA.fullmatch(features or "-"):
        raise MalformedHeader(name, "must be comma-separated feature names (A-Z a-z 0-9 . _ -)")
    return features


def _weight(value: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        weight = 0.0
    if not 0 < weight <= 1000:
        raise MalformedHeader(h.WEIGHT, "must be a number above 0, at most 1000")
    return weight


def _count(name: str, value: str, *, low: int, high: int) -> int:
    if not value.isdecimal() or len(value) > 9 or not low <= int(value) <= high:
        raise MalformedHeader(name, f"must be a whole number from {low} to {high}")
    return int(value)
