"""What the timeouts a client's SDK announces mean at the edge.

``X-Request-Timeout`` is a whole request's deadline. The SDKs' own headers say how long the
client waits for something narrower:

* ``X-Stainless-Timeout`` (the Node SDKs, ``@anthropic-ai/sdk`` and ``openai``; Anthropic's
  Python SDK too, or ``NOT_GIVEN`` when the call set none): the Node SDKs time only the wait
  for the response headers (their ``fetchWithTimeout`` clears the timer once ``fetch``
  resolves), the Python ones each read. For a whole answer either is the wait for all of it;
  a stream's headers go out with its first chunk (or once it is ``ingress.stream_start_s``
  late, or, when the provider has begun, ahead of this wait: :func:`first_reply`), so for a
  stream it bounds only the wait for that chunk, never the stream.
* ``X-Stainless-Read-Timeout`` (OpenAI's Python SDK sends only this one): the longest wait for
  the next bytes, so the deadline of a whole answer and nothing for a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from switchyard.bus.replies import Reply, ReplyKind
from switchyard.errors import ApiError, DeadlineExceeded, InvalidRequest

REQUEST = b"x-request-timeout"
SDK = b"x-stainless-timeout"
SDK_READ = b"x-stainless-read-timeout"
_TITLES = {
    REQUEST: "X-Request-Timeout",
    SDK: "X-Stainless-Timeout",
    SDK_READ: "X-Stainless-Read-Timeout",
}
# How far ahead of a first chunk's bound a stream whose provider began starts without it.
BEGIN_AHEAD_S = 2.0
# How the 504s of a request deadline that passed begin (heads, model-proxies, the edge's wait).
_DEADLINE_PASSED = "the request deadline passed"
# How much later than an SDK's own timeout a whole answer's deadline passes: the SDK gives up
# first and raises its timeout error (``openai.APITimeoutError``), as against OpenAI, and its
# leaving cancels the work (ingress/departure.py); at the same moment, the edge's 504 often came
# first and the SDK raised ``InternalServerError`` instead, which ``except APITimeoutError``
# does not catch.
SDK_GRACE_S = 1.0


def deadline_header(wanted: dict[bytes, bytes], *, streamed: bool) -> bytes | None:
    """The header value (seconds) that sets the request's deadline; None for the default.
    An SDK's timeout sets it :data:`SDK_GRACE_S` later than it says.

    Raises:
        InvalidRequest: ``X-Request-Timeout`` is not a positive number of seconds (our own
            header, so a typo is the client's to hear about; the SDKs' headers may say
            ``NOT_GIVEN`` and are read leniently).
    """
    raw = wanted.get(REQUEST)
    if raw is not None and seconds(raw) is None:
        raise InvalidRequest(
            "X-Request-Timeout must be a positive number of seconds",
            param="X-Request-Timeout",
            code="invalid_header",
        )
    if streamed or REQUEST in wanted:
        return _given(wanted, REQUEST)
    given = _given(wanted, SDK, SDK_READ)
    value = seconds(given) if given is not None else None
    return None if value is None else str(value + SDK_GRACE_S).encode()


def deadline_limit(
    wanted: dict[bytes, bytes], *, streamed: bool, default_s: float, max_s: float
) -> str:
    """Which limit set the request's deadline (as :func:`deadline_header` and
    ``Edge.deadline`` choose it), for its 504: the client's own header, or the operator's
    setting, by name (then raising its own timeout would not help, or would only up to it)."""
    for name in (REQUEST,) if streamed else (REQUEST, SDK, SDK_READ):
        raw = wanted.get(name)
        value = seconds(raw) if raw else None
        if value is None:
            continue
        grace = "" if name == REQUEST else f", and {SDK_GRACE_S:g} s for the SDK to leave first"
        if value + (0.0 if name == REQUEST else SDK_GRACE_S) > max_s:  # the grace is capped too
            return (
                f"the gateway's limit ingress.max_deadline_s ({max_s:g} s), which capped the "
                f"client's {_TITLES[name]} of {value:g} s{grace}"
            )
        return f"the client's own {_TITLES[name]} ({value:g} s{grace})"
    return (
        f"the gateway's default ingress.default_deadline_s ({default_s:g} s): the request "
        f"set no X-Request-Timeout (up to ingress.max_deadline_s, {max_s:g} s)"
    )


def naming_the_limit(error: ApiError, limit: Callable[[], str] | None) -> ApiError:
    """``error``, its message naming the limit ``limit()`` returns (:func:`deadline_limit`)
    when it is the 504 of the request's deadline passing (not of a narrower wait that names
    its own). ``limit`` is called only then: the words are not worth making for every
    request (None: the request failed before its deadline was set)."""
    if (
        limit is not None
        and error.code == DeadlineExceeded.code
        and error.message.startswith(_DEADLINE_PASSED)
    ):
        error.message = f"{error.message} (the deadline was {limit()})"
    return error


def first_chunk_wait(wanted: dict[bytes, bytes]) -> float | None:
    """Seconds a stream may take to its first chunk (``X-Stainless-Timeout``); None: no bound
    but the deadline."""
    raw = wanted.get(SDK)
    return seconds(raw) if raw else None


async def first_reply(
    replies: AsyncIterator[Reply],
    within: float | None,
    begin: Callable[[], None] | None = None,
    *,
    grace: float = SDK_GRACE_S,
) -> Reply | None:
    """The first reply that is not a keep-alive, within ``within`` seconds (the SDK's
    ``X-Stainless-Timeout``) and ``grace`` if given; None when the replies ended first. The 504
    comes ``grace`` after the SDK's timeout, so the SDK gives up first and raises its own
    timeout error (as for a whole answer's deadline); the stream's early start below keeps to
    ``within`` itself, as the SDK's timer does.

    ``begin`` (with ``within``): called, and the bound dropped, when the bound is about to pass
    (:func:`begin_at`; never once ``within`` itself has passed, in the grace) and a model-proxy
    said the provider's stream has begun (a keep-alive
    marked ``Sy-Begun``: its opening is held until its first content): the caller starts the
    response then, so an SDK that times only the wait for the headers keeps its stream.

    Raises:
        DeadlineExceeded: none came in time (504; the reply iterator, cancelled while it
            waited, tells the model-proxies the caller left).
    """
    if within is None:  # no timeout scope (a few microseconds) for a request without one
        return await _content(replies)
    scope = asyncio.timeout(within + grace)
    started = _Start(scope, begin) if begin is not None else None
    timers: list[asyncio.TimerHandle] = []
    if started is not None:
        loop = asyncio.get_running_loop()
        timers.append(loop.call_later(begin_at(within), started.due))
        # Past the SDK's own wait it gave up: a begun then must not start a stream nobody reads
        # (and clear the 504 that comes ``grace`` later).
        timers.append(loop.call_later(within, started.late))
    try:
        async with scope:
            async for reply in replies:
                if reply.kind is not ReplyKind.KEEPALIVE:
                    return reply
                if started is not None:
                    started.heard(reply)
            return None
    except TimeoutError:
        if not scope.expired():
            raise
        leave = f", and {grace:g} s for the SDK to leave first" if grace else ""
        raise DeadlineExceeded(
            f"the answer did not begin within the client's timeout ({within:g} s, "
            f"X-Stainless-Timeout{leave})"
        ) from None
    finally:
        for timer in timers:
            timer.cancel()


def begin_at(within: float) -> float:
    """When, of a first chunk's ``within`` seconds, a stream whose provider has begun starts
    without it: ahead of the bound by half of it, at most by :data:`BEGIN_AHEAD_S` (the SDK's
    clock started before the edge's: the body's upload, the admission)."""
    return within - min(BEGIN_AHEAD_S, within / 2)


class _Start:
    """Whether a stream starts before its first chunk (:func:`first_reply`): once the provider
    has begun and the time to start has come, whichever is last.

    A begun is of one placement and delivery of the request: when the head moves it (a reroute
    after that provider failed before content: ``Reply.moved``) or another delivery announces
    itself (a redelivery: a keep-alive naming another ``delivery``), the provider now serving it
    has not begun, and a failure there must still be the 504 an SDK retries, not an error event
    in a 200."""

    __slots__ = ("_begin", "_begun", "_delivery", "_due", "_scope")

    def __init__(self, scope: asyncio.Timeout, begin: Callable[[], None]) -> None:
        self._scope = scope
        self._begin: Callable[[], None] | None = begin  # None once called
        self._begun = self._due = False
        self._delivery = ""  # the delivery that said it began ("" from older model-proxies)

    def heard(self, keepalive: Reply) -> None:
        if keepalive.begun:
            self._delivery = keepalive.delivery
            if not self._begun:
                self._begun = True
                self._start()
        elif keepalive.moved or (keepalive.delivery and keepalive.delivery != self._delivery):
            self._begun = False

    def due(self) -> None:
        self._due = True
        self._start()

    def late(self) -> None:
        """The SDK's own wait (``within``) has passed: it gave up, so nothing starts now."""
        self._begin = None

    def _start(self) -> None:
        begin = self._begin
        if begin is not None and self._begun and self._due and not self._scope.expired():
            self._begin = None
            self._scope.reschedule(None)  # the headers are out: no 504 of this bound now
            begin()


async def _content(replies: AsyncIterator[Reply]) -> Reply | None:
    async for reply in replies:
        if reply.kind is not ReplyKind.KEEPALIVE:
            return reply
    return None


def seconds(raw: bytes) -> float | None:
    """A timeout header's seconds: a positive finite number, else None (``NOT_GIVEN``)."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 < value < float("inf") else None


def _given(wanted: dict[bytes, bytes], *names: bytes) -> bytes | None:
    """The first of the headers ``names`` that holds a timeout."""
    for name in names:
        raw = wanted.get(name)
        if raw and seconds(raw) is not None:
            return raw
    return None
