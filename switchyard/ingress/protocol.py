"""uvicorn's httptools protocol with the limits it lacks: head size, time, connections, readers.

httptools puts no bound on a request head (hundreds of kilobytes of headers were accepted),
and uvicorn's only timer is the keep-alive one: a connection that never sends a request, sends
its head one byte at a time, stops sending its body, or stops reading an answer is held
forever. Each bound here answers or closes such a connection (see docs/security.md):

* a head larger than ``max_header_bytes`` or with more than ``max_headers`` fields: 431;
* no complete head ``header_timeout_s`` after the connection opened (on a kept-alive
  connection, after the next request's first byte): 408 if a partial head arrived, else the
  idle connection is closed; a keep-alive
  connection idle ``keepalive_s`` after its last answer is closed (load balancers reuse
  connections idle for a minute: closing at the header timeout raced their next request);
* no complete body ``body_timeout_s`` after the head (for a request queued behind one being
  answered, after that answer: nothing is read meanwhile): 408 if nothing was answered yet,
  and the connection is closed (the application sees a disconnect); for a request pipelined
  behind one still being answered, the 408 follows that answer. A whole-body time, not an
  idle one: a body trickled a byte at a time would hold the connection for ever;
* an answer the client does not read for ``write_timeout_s`` (the socket buffer stays full):
  the connection is aborted (a streaming relay stops, as for any client that left);
* more than ``max_connections`` open connections: an idle one is closed to make room for the
  new one, or, when none is idle, the new one is closed at once.

Bytes the HTTP parser rejects (not HTTP, a malformed head or chunk, ``Content-Length`` together
with ``Transfer-Encoding``) are answered 400 ``invalid_request`` in OpenAI's shape, naming what
the parser found, where uvicorn sent ``text/plain`` "Invalid HTTP request received."; a request
read whole before them (pipelined in the same write) is answered first, then the 400. A
pipelined request whose own body is malformed while an earlier one is still being answered is
dropped unrun, and its 400 follows that answer (uvicorn wrote it at once: before the earlier
answer, which was lost, or inside it).
Every answer here carries an ``x-request-id``, as the application's do, and the CORS headers
the app's answer would (``ingress.cors_origins``, :mod:`.cors`) when the request's path and
``Origin`` were parsed, or, for a head refused before its end (431, 400), read on for (the
field may come after the one that broke the head; :mod:`.origin_seek`): a browser page could
not read them and saw "Failed to fetch".

The checks cost nothing per request beyond reading the loop's clock (one lazily re-armed timer
per connection); the ASGI application never sees a request that broke one.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import sys
import termios
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import httptools
import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from switchyard.config import Settings
from switchyard.ingress.cors import answer_headers, api_path
from switchyard.ingress.http10 import UnframedCycle
from switchyard.ingress.origin_seek import OriginSeek, origin_values

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
}
# Named like every other error code (a number said nothing a status does not).
_CODES = {400: "invalid_request", 408: "request_timeout", 431: "headers_too_large"}
_ENCODE = msgspec.json.Encoder()
_TAIL = 2048  # bytes kept of what was read last: enough for an Origin field


def _answer(
    status: int, message: str, request_id: str, extra: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": _CODES[status],
    }
    body = _ENCODE.encode({"error": error})
    headers = b"".join(b"%s: %s\r\n" % header for header in extra or ())
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"x-request-id: %s\r\n%sconnection: close\r\n\r\n"
        % (status, _REASONS[status], len(body), request_id.encode(), headers)
    ) + body


def _random_id() -> str:
    """A request id for a protocol class given no source of its own."""
    return f"req-{uuid.uuid4().hex}"


class GuardedProtocol(HttpToolsProtocol):
    """One HTTP connection, with the limits of the class attributes (set by :func:`guarded`)."""

    max_header_bytes = 32 * 1024
    max_headers = 100
    header_timeout_s = 10.0
    keepalive_s = 30.0
    body_timeout_s = 60.0
    write_timeout_s = 60.0
    max_connections = 4096
    cors_origins: tuple[str, ...] = ()  # (``ingress.cors_origins``)
    # The edge's own ids (``Edge.new_request_id``), set by :func:`guarded`.
    new_request_id: Callable[[], str] = staticmethod(_random_id)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        # idle (between requests) -> head -> body -> app (the request is in) -> idle
        self._phase = "idle"
        self._answered = False  # a request was answered: the connection is kept alive
        self._head_bytes = 0
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when ``_timer`` fires
        self._deadline: float | None = None  # when the current phase must have ended
        self._write_timer: asyncio.TimerHandle | None = None
        self._owed = b""  # a 400 owed after the answer in progress
        # The request whose application runs, or last ran: ``self.cycle`` is the one parsed
        # last, which may be waiting behind it in ``self.pipeline``.
        self._running: RequestResponseCycle | None = None
        self._tail = b""  # the last bytes of a head being read (with ``cors_origins`` only)
        self._reading = b""  # the bytes being parsed, while they are (a head's end is in them)
        self._seek: OriginSeek | None = None  # a refused head's answer, awaiting its Origin

    # ---- connection ----

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self._refused = True
            transport.abort()
            return
        self._arm(self.header_timeout_s)

    def _make_room(self) -> bool:
        """At the limit, a new client is worth more than one holding an idle connection:
        close one that is between requests (or never sent one). False when none is idle."""
        for other in self.connections:
            if other is not self and isinstance(other, GuardedProtocol) and other.idle:
                other.transport.close()
                return True
        return False

    @property
    def idle(self) -> bool:
        """Between requests: no request in progress (and none begun)."""
        return self._phase == "idle" and not self.transport.is_closing()

    def connection_lost(self, exc: Exception | None) -> None:
        running = self._running
        if running is not None and running is not self.cycle and not running.response_complete:
            # uvicorn tells only the request parsed last (``self.cycle``); with one queued
            # behind it, the running request's app would never hear its client leave.
            running.disconnected = True
            running.message_event.set()
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._tail = b""
        self._seek = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._seek is not None:
            if self._seek.feed(data):
                self._answer_seek()
            return
        if self._refused:
            return
        # The last bytes read, for a head that stops (see _cors): only while a head may be
        # coming (a body's bytes are not kept; on_headers_complete drops the head's).
        kept = bool(self.cors_origins) and self._phase != "body"
        if kept:
            self._keep(data)
        self._reading = data
        try:
            super().data_received(data)
        finally:
            self._reading = b""
        if self._phase == "head" and not self._refused:
            if self.cors_origins and not kept:  # a head begun in a body's last bytes
                self._keep(data)
            self._head_bytes += len(data)  # a request began, its head is not complete yet
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, "request head too large", self._cors())

    def _keep(self, data: bytes) -> None:
        self._tail = data[-_TAIL:] if len(data) >= _TAIL else (self._tail + data)[-_TAIL:]

    # ---- parser callbacks ----

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == "idle" and self._answered:  # a later head's time starts with it
            self._arm(self.header_timeout_s)  # (a first one's counts from the connection)
        self._phase = "head"
        self._head_bytes = 0
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._phase = "body"
        if self._header_bytes > self.max_header_bytes or len(self.headers) > self.max_headers:
            self._refuse(431, "too many or too large request headers", self._cors())
            return
        self._tail = b""  # the head is whole: its bytes (a client's key, often) are not kept
        self._arm(self.body_timeout_s)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope and self.scope["http_version"] == "1.0":
            # Not chunked to a client that does not know chunks (see .http10); the cycle's
            # task has not run yet, so its first ``send`` is already this class's.
            cycle.__class__ = UnframedCycle

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._phase = "app"
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser rejected (called while it handles the
        parser's error): OpenAI's shape, naming the parser's reason, and nothing more is read.
        While an earlier request is being answered (its answer in progress, or its app still
        working), the 400 follows that answer and those of the whole requests queued behind
        it (see :meth:`on_response_complete`); a queued request whose own body is malformed
        is dropped, its app never run. An answer already going out for the very request whose
        body turned out malformed (answered early) is cut."""
        error = sys.exception()
        reason = str(error) if isinstance(error, httptools.HttpParserError) and str(error) else ""
        reason = reason or msg
        message = f"malformed HTTP request: {reason}" if reason else "malformed HTTP request"
        self._refused = True
        cycle, running = self.cycle, self._running
        if cycle is not None and cycle is not running and cycle.more_body:
            self._drop_queued(cycle)
        if running is not None and not running.response_complete:
            self._disarm()
            if running is not cycle or not cycle.more_body:  # an earlier request, read whole
                self._owed = _answer(400, message, self.new_request_id(), self._cors())
                return
            if running.response_started:  # a 400 written now would land inside that answer
                self.transport.close()
                return
        self._refuse(400, message, self._cors())

    def _drop_queued(self, cycle: RequestResponseCycle) -> None:
        """Takes ``cycle`` out of the pipeline: its app is never run."""
        for queued in self.pipeline:
            if queued[0] is cycle:
                self.pipeline.remove(queued)
                return

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def _write_owed(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # (starts the next request queued, if any)
        if self._owed and not self.pipeline and not self.transport.is_closing():
            running = self._running
            if running is None or running.response_complete:  # every request read was answered
                # Once the answer's last bytes are out: a whole answer is written in one piece
                # by .onewrite after this callback returns.
                self.loop.call_soon(self._write_owed, self._owed)
                self._owed = b""
                return
        if not self.transport.is_closing():
            if self._phase == "app":  # else an early answer: the body's rest may still come
                self._phase = "idle"
                self._answered = True
                self._arm(self.keepalive_s)
            elif (
                self._phase == "body"
                and self.cycle is not None
                and not self.cycle.response_complete
            ):
                # A queued request, started now, whose body is still coming: reading stopped
                # during the answer before it, and its body gets its whole time from here (the
                # header timeout cut slow uploads short).
                self._arm(self.body_timeout_s)
            else:  # a head begun during that answer, or the rest of a body answered early
                self._arm(self.header_timeout_s)

    def timeout_keep_alive_handler(self) -> None:
        """uvicorn's keep-alive timeout, which closes the idle connection: not while a request
        waits unread in its socket (see :meth:`_timed_out`); it is tried again a timeout later,
        by when the loop has read the request (which cancels this timer)."""
        if _unread(self.transport) and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    # ---- a reader that stopped reading ----

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._stalled)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _stalled(self) -> None:
        self._write_timer = None
        self.transport.abort()

    # ---- helpers ----

    def _arm(self, seconds: float) -> None:
        """The phase must end within ``seconds``. One timer per connection, re-armed lazily:
        moving the deadline later (every request on a keep-alive connection does, twice) only
        stores a number, and the timer, when it fires early, sleeps again until the deadline."""
        self._deadline = self.loop.time() + seconds
        if self._timer is not None and self._timer_at <= self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self._deadline
        self._timer = self.loop.call_at(self._deadline, self._check)

    def _disarm(self) -> None:
        self._deadline = None  # the timer, if any, finds nothing due when it fires

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:
            self._timer_at = self._deadline
            self._timer = self.loop.call_at(self._deadline, self._check)
            return
        self._deadline = None
        self._timed_out()

    def _timed_out(self) -> None:
        if self.transport.is_closing():
            return
        if self._seek is not None:  # the head's time is up: its answer goes as it is
            self._answer_seek()
            return
        if self._phase == "idle":
            if _unread(self.transport):
                # A request is waiting in the socket, unread: the process was paused (a VM
                # pause, SIGSTOP) and uvloop runs due timers before reading. Closing with
                # unread bytes resets the connection and the request goes unanswered; the
                # next read starts it, and the head's own timeout applies from there.
                self._arm(self.header_timeout_s)
                return
            self.transport.close()  # no request (or no next request) began
            return
        message = "the request did not arrive in time"
        cycle = self.cycle
        if self._phase == "body" and cycle is not None and cycle is not self._running:
            self._late_in_queue(cycle, message)
            return
        if self._phase == "head" or cycle is None or not cycle.response_started:
            self.transport.write(_answer(408, message, self.new_request_id(), self._cors()))
        self._refused = True
        self.transport.close()

    def _late_in_queue(self, cycle: RequestResponseCycle, message: str) -> None:
        """A pipelined request's body is late while an earlier request is being answered:
        its 408 is owed after that answer, as a malformed body's 400 is (written now, it
        landed before that answer, which was lost, or inside it), and it is never run. Not
        while bytes wait unread: uvicorn stops reading during the earlier answer."""
        if _unread(self.transport):
            self._arm(self.body_timeout_s)
            return
        self._drop_queued(cycle)
        self._refused = True
        self._owed = _answer(408, message, self.new_request_id(), self._cors())

    def _refuse(
        self, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self._refused = True
        if not extra and self._seek_origin(status, message):
            return  # answered once its Origin field, its end or a limit is reached
        self._disarm()
        self.transport.write(_answer(status, message, self.new_request_id(), extra))
        self.transport.close()

    def _seek_origin(self, status: int, message: str) -> bool:
        """Whether the rest of a head refused before its end is read for its ``Origin``
        field (see :mod:`.origin_seek`): with ``cors_origins``, on an LLM API path, and when
        the bytes read so far neither hold the field nor end the head. The head's timer stays
        armed: when its time is up, the answer goes without the field."""
        if not self.cors_origins or self._phase != "head":
            return False
        scope = self._partial_scope()
        path = scope.get("path")
        if not isinstance(path, str) or not api_path(path):
            return False
        if any(name == b"origin" for name, _ in scope["headers"]):  # one not allowed
            return False
        if self._head_ended():  # the whole head was read, with no Origin
            return False
        self._seek = OriginSeek(status, message, scope, self.max_header_bytes, self._tail)
        self._tail = b""
        return True

    def _answer_seek(self) -> None:
        seek, self._seek = self._seek, None
        if seek is None or self.transport.is_closing():
            return
        self._disarm()
        extra = answer_headers(self.cors_origins, seek.scope)
        self.transport.write(_answer(seek.status, seek.message, self.new_request_id(), extra))
        self.transport.close()

    def _cors(self) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer to the request being read. Its head may be refused
        or never complete (a 431, the 408 of a slow head, the 400 of a malformed one): then
        what arrived of it is used. The origin is known if an ``Origin`` field arrived whole
        before the head stopped (one after the field too large, or after bad bytes, is read
        on for by :meth:`_seek_origin`), the path only once the request line did: else there
        are none, and a browser cannot read the answer."""
        if not self.cors_origins or self._phase not in ("head", "body"):
            return []
        if self._phase == "body" and "path" in self.scope:
            return answer_headers(self.cors_origins, self.scope)
        return answer_headers(self.cors_origins, self._partial_scope())

    def _partial_scope(self) -> dict[str, Any]:
        """The path and fields of a head that stopped. The parser hands a field over only
        when the next one begins, so the last whole field (an ``Origin`` just before bad bytes
        or a stall) is read from the head's last bytes."""
        headers: list[tuple[bytes, bytes]] = list(getattr(self, "headers", None) or ())
        url: bytes = getattr(self, "url", b"")
        tail, whole = self._head_tail()
        if not whole and not headers:
            return {}  # the request line may not have arrived whole: no path
        headers += [(b"origin", value) for value in origin_values(tail)]
        path = _path(url)
        return {"path": path, "headers": headers} if path is not None else {}

    def _head_ended(self) -> bool:
        """Whether the end of the head being refused was read: in the last bytes kept (an end
        split between reads), or anywhere in the read being parsed, from the head's request
        line on when it holds it (a head's end followed by more body than is kept, in one read,
        made the client wait ``header_timeout_s`` for its 400)."""
        if b"\r\n\r\n" in self._head_tail()[0]:
            return True
        url: bytes = getattr(self, "url", b"")
        line = self._reading.rfind(b" %s HTTP/1." % url) if url else -1
        return b"\r\n\r\n" in self._reading[max(line, 0) :]

    def _head_tail(self) -> tuple[bytes, bool]:
        """The last bytes read, from the head's request line on when they hold it (bytes
        before it may be an earlier request's), and whether they do. When the read being
        parsed holds the line, the head is taken from it, to its end (at most the head's
        limit): its last 2 KiB may be body read with the head (an ``Origin`` not seen)."""
        url: bytes = getattr(self, "url", b"")
        if not url:
            return self._tail, False
        line = self._reading.rfind(b" %s HTTP/1." % url)
        if line >= 0:
            end = self._reading.find(b"\r\n\r\n", line, line + self.max_header_bytes)
            return self._reading[line : end + 4 if end >= 0 else line + self.max_header_bytes], True
        line = self._tail.rfind(b" %s HTTP/1." % url)
        return (self._tail[line:], True) if line >= 0 else (self._tail, False)


def guarded(
    settings: Settings, new_request_id: Callable[[], str] | None = None
) -> type[GuardedProtocol]:
    """The protocol class with the limits of ``settings.ingress``; its answers' request ids
    come from ``new_request_id`` (the edge's), else are random."""
    ingress = settings.ingress
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "new_request_id": staticmethod(new_request_id or _random_id),
            "max_header_bytes": ingress.max_header_bytes,
            "max_headers": ingress.max_headers,
            "header_timeout_s": ingress.header_timeout_s,
            "keepalive_s": ingress.keepalive_s,
            "body_timeout_s": ingress.body_timeout_s,
            "write_timeout_s": ingress.write_timeout_s,
            "max_connections": ingress.max_connections,
            "cors_origins": ingress.cors_origins,
        },
    )


def _path(url: bytes) -> str | None:
    """The path of a request line's target, as uvicorn puts it in the scope; None for one
    that does not parse."""
    try:
        raw = httptools.parse_url(url).path
    except httptools.HttpParserInvalidURLError:
        return None
    path = raw.decode("latin-1") if raw else ""
    return urllib.parse.unquote(path) if "%" in path else path


def _unread(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes wait unread in ``transport``'s socket (``FIONREAD``; False if unknown)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    waiting = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting, True)
    except (OSError, ValueError):  # closed meanwhile, or not a socket this call reads
        return False
    return waiting[0] > 0
