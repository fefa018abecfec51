"""The async client of the LLM API over NATS, for internal services and for the ingress itself.

One wildcard inbox subscription per connection carries every reply; each attempt of each request
gets a fresh token on it, so late messages of an abandoned attempt are dropped. The client owns
the reliability rules of DESIGN §8:

* no head listening (NATS "no responders") is retried briefly, then raised as 503;
* a request not acknowledged by a head within ``accept_timeout`` is re-sent (same request id,
  next attempt number) - the head lost it before storing it; each attempt says when that is
  (``Sy-Accept-By``), so a head that reaches a copy later (paused, or busy) drops it unserved;
* a reconnect to NATS loses the server-side reply path, so every request that has not yet
  yielded content is re-sent; one that already streamed content ends with an error;
* the deadline (``Sy-Deadline``) bounds everything and becomes a 504;
* a consumer that closes the reply iterator before its end (or whose task is cancelled while
  it waits) sends ``llm.v1.cancel``: the model-proxy serving the request stops the provider
  call, and one that pulls it from its queue later drops it unserved. Every model-proxy hears
  it, so it names the client key by a proof for that one request id
  (:mod:`switchyard.bus.cancel_proof`), never by the key itself;
* a consumer that takes its replies more slowly than they arrive (an HTTP client reading a
  fast stream a byte at a time) holds them here, unread: past ``max_unread_bytes`` the
  exchange ends with :class:`~switchyard.errors.ReaderTooSlow`, what was queued is freed at
  once and the cancel goes out at once, as for a consumer that left (nothing pushes back on a
  model-proxy, which publishes as fast as its provider answers).

An example of its use by an internal service is in docs/nats-api.md ("Getting an identity").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.bus.cancel_proof import cancel_headers, presented_key_hash
from switchyard.bus.envelope import Deadline, Envelope
from switchyard.bus.parts import MAX_ANNOUNCED, Assembly
from switchyard.bus.probe_answers import ProbeAnswers
from switchyard.bus.replies import Reply, ReplyKind, decode_reply, error_from_reply, payload_room
from switchyard.bus.unread import MAX_UNREAD_BYTES, MSG_COST, too_slow
from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
)
from switchyard.runtime.reply_wait import (
    NO_WORKERS_RETRY_S,
    RECONNECTED,
    Expired,
    Expiry,
    ReplyProgress,
    ReplyQueue,
    Resend,
)
from switchyard.runtime.tasks import TaskSupervisor

__all__ = ["LLMClient", "Reply", "ReplyKind", "error_from_reply"]

log = logging.getLogger("switchyard.client")

# How often a client checks its connection's reconnect counter (a reconnect loses reply paths).
RECONNECT_POLL_S = 0.2
# "No responders" right after a head answered this client, or right after this client
# reconnected, is most likely a failover in progress (heads on a lost node reconnecting, their
# interest spreading to the node this client is on): "no responders" and unanswered sends are
# then retried beyond the usual attempts for this long. A client no head has answered lately
# still gets its 503 at once.
SETTLING_S = 5.0
# Request ids whose cancels a client remembers, so sending one again is served (~100 B each).
CANCELLED_IDS = 4096
# Queued for a request whose consumer fell behind by more than ``max_unread_bytes``.
OVERFLOWED = object()
_JSON = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder()
# Where a helper without a streaming twin sends a caller who wants the chunks.
_EXCHANGE = "use exchange()"


class LLMClient:
    """Send LLM API requests over NATS and receive (streamed) replies.

    Args:
        nc: a connection made with :func:`switchyard.bus.connect.connect` (its inbox prefix is
            the identity's, which the server requires).
        api_key: the client key requests are made with (internal callers); its models, limits
            and budget apply as for HTTP callers.
        attempts: how many times a request may be sent in total.
        accept_timeout: re-send if no head acknowledged within this many seconds.
        default_timeout: deadline for requests that bring none.
        max_unread_bytes: reply bytes one request may hold received and not yet taken by its
            consumer (plus ``MSG_COST`` per message); past it the request ends with
            :class:`~switchyard.errors.ReaderTooSlow` and is cancelled. A message that finds
            nothing waiting is always taken in, however large (a whole answer).
        max_answer_bytes: the largest whole answer taken (``Sy-Parts-Max``, 999,999,999 at
            most): one past a bus message comes in parts, joined here (docs/nats-api.md,
            "Answers in parts"), each acknowledged on arrival (``Sy-Parts-Ack``: flow
            control, :mod:`switchyard.bus.part_acks`); past it a 413. 0 (default: parts are
            opt-in, docs/nats-api.md): one message.
    """

    def __init__(
        self,
        nc: NATS,
        *,
        attempts: int = 3,
        accept_timeout: float = 10.0,
        default_timeout: float = 600.0,
        api_key: str | None = None,
        max_unread_bytes: int = MAX_UNREAD_BYTES,
        max_answer_bytes: int = 0,
    ) -> None:
        self._nc = nc
        # Internal callers present a client key (the head checks it); the edges pass a hash.
        self._auth = f"Bearer {api_key}" if api_key else ""
        # Its hash keys the proof a cancel carries instead of the key (hashed once, here).
        self._key_hash = presented_key_hash(self._auth)
        self._attempts = attempts
        self._accept_timeout = accept_timeout
        self._default_timeout = default_timeout
        self._nuid = NUID()
        self._inbox = nc.new_inbox()  # under the identity's inbox prefix given at connect
        self._pending: dict[str, ReplyQueue] = {}
        self._max_unread = max_unread_bytes
        self._max_answer = min(max(0, max_answer_bytes), MAX_ANNOUNCED)  # (what heads take)
        self._parts_max = str(self._max_answer) if self._max_answer else ""
        self.unread_bytes = 0  # held across every request: see ``max_unread_bytes``
        self.overflows = 0  # requests ended because their consumer fell behind
        # The last attempt of each request id this client cancelled (the newest CANCELLED_IDS).
        self._cancelled: dict[str, int] = {}
        self._sub: Subscription | None = None
        self._loops = TaskSupervisor("llm-reconnects")
        self._reconnects_seen = nc.stats["reconnects"]
        # The reconnect watch runs only while requests wait (an idle edge is not woken 5 times
        # a second): the count it compares with, and the signal that work arrived.
        self._watched_reconnects = self._reconnects_seen
        self._busy = asyncio.Event()
        self._reconnected_at = float("-inf")
        self._answered_at = float("-inf")  # when a head last acknowledged a request
        self.probes = ProbeAnswers(nc)  # answers probes and parts (refused: no parts acks)

    def _settling(self, now: float) -> bool:
        """True shortly after this client reconnected or a head answered it (see SETTLING_S)."""
        count = self._nc.stats["reconnects"]
        if count != self._reconnects_seen:
            self._reconnects_seen = count
            self._reconnected_at = now
        return now - max(self._reconnected_at, self._answered_at) < SETTLING_S

    async def __aenter__(self) -> LLMClient:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        self._loops.spawn(self._watch_reconnects())

    async def close(self) -> None:
        """Stop receiving replies. Idempotent."""
        await self._loops.cancel_all()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _watch_reconnects(self) -> None:
        """Notice reconnects by the connection's own counter, so no caller has to wire a
        ``reconnected_cb``: reply paths did not survive a reconnect, and requests waiting on
        them are re-sent (or end, if content was already delivered). Sleeps while no request
        waits; :meth:`_open` wakes it and sets the count to compare with."""
        while True:
            if not self._pending:
                self._busy.clear()
                await self._busy.wait()
            await asyncio.sleep(RECONNECT_POLL_S)
            count = self._nc.stats["reconnects"]
            if count != self._watched_reconnects:
                self._watched_reconnects = count
                for replies in self._pending.values():
                    replies.queue.put_nowait(RECONNECTED)

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        replies = self._pending.get(token)
        if replies is None:
            return
        if msg.reply:  # a model-proxy's probe (a keep-alive): answered, so a caller that
            await self.probes.answer(msg.reply)  # crashed is noticed (docs/nats-api.md)
        cost = len(msg.data) + MSG_COST
        held = replies.held + cost
        if (
            replies.held
            and held > self._max_unread
            and not replies.takes_past_bound(msg, held <= self._max_answer + self._max_unread)
        ):
            self._overflow(token, replies)
            return
        replies.held += cost
        self.unread_bytes += cost
        replies.queue.put_nowait(msg)

    def _overflow(self, token: str, replies: ReplyQueue) -> None:
        """``replies``' consumer fell behind by more than ``max_unread_bytes``: free what it
        holds now, take no more of its messages, tell the model-proxy the caller left (the
        provider call stops and is billed once, as for a client that disconnected), and
        leave the consumer the marker that ends its exchange with :class:`ReaderTooSlow`."""
        del self._pending[token]
        queue = replies.queue
        while not queue.empty():
            queue.get_nowait()
        self.unread_bytes -= replies.held
        replies.held = 0
        replies.overflowed = True
        self.overflows += 1
        queue.put_nowait(OVERFLOWED)
        log.info(
            "request %s: its consumer fell more than %d bytes behind its replies; ended",
            replies.env.request_id,
            self._max_unread,
        )
        if not self._loops.closed:
            self._loops.spawn(self._cancel(replies.env, replies.attempt), name="llm-cancel")
        if replies.on_overflow is not None:
            replies.on_overflow(too_slow(self._max_unread))

    @property
    def payload_room(self) -> int:
        """The largest request body one message carries on the connected server."""
        return payload_room(self._nc.max_payload)

    @property
    def connected(self) -> bool:
        """Whether this process's NATS connection is up (not reconnecting, not closed)."""
        return bool(self._nc.is_connected)

    def new_request_id(self) -> str:
        return self._nuid.next().decode()

    def envelope(
        self, given: Envelope | Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> Envelope:
        """The envelope a request goes out with: ``given`` (an envelope, or headers to decode),
        with this client's key and a deadline filled in when missing.

        Raises:
            MalformedHeader: ``given`` headers break the wire contract.
        """
        env = given if isinstance(given, Envelope) else Envelope.decode(given)
        changes: dict[str, Any] = {}
        if env.deadline is None:
            seconds = self._default_timeout if timeout is None else timeout
            changes["deadline"] = Deadline.after(seconds)
        if self._auth and not env.authorization:
            changes["authorization"] = self._auth
        if self._parts_max and not env.parts_max:
            changes["parts_max"] = self._parts_max
        acks = bool(env.parts_max or self._parts_max) and not self.probes.seen_refused()
        if acks != env.parts_ack:  # it acknowledges parts (_on_reply) unless refused before
            changes["parts_ack"] = acks
        return env.with_(**changes) if changes else env

    async def exchange(  # noqa: PLR0915  (one frame per reply message: no helper on this path)
        self,
        subject: str,
        body: bytes,
        envelope: Envelope | Mapping[str, str] | None = None,
        *,
        on_overflow: Callable[[ApiError], None] | None = None,
    ) -> AsyncGenerator[Reply, None]:
        """Send one request and yield its reply messages, ending with ``final`` or ``error``.

        ``envelope`` may carry the request id, deadline and trace context (an
        :class:`~switchyard.bus.envelope.Envelope`, or wire headers); missing ids and deadlines
        are filled in. Keep-alives are yielded too (an HTTP edge turns them into SSE comments);
        ``accepted`` is not (one of a later placement is a keep-alive: ``replies.MOVED``), nor
        is a keep-alive of a placement the request has left since (``ReplyProgress.heard``).

        ``on_overflow`` is called (from the reply callback, at once) with the
        :class:`ReaderTooSlow` error when the consumer fell more than ``max_unread_bytes``
        behind: one that may be waiting elsewhere (an HTTP edge writing to a client that
        stopped reading) interrupts itself; the next reply it asks for raises that error. The
        cancel is already on its way by then.

        Raises:
            MalformedHeader: ``envelope`` headers break the wire contract (400).
            ServiceUnavailable: no head is listening (after brief retries).
            DeadlineExceeded: the deadline passed.
            ProviderError: the reply path broke after content was already yielded.
            ReaderTooSlow: the consumer fell more than ``max_unread_bytes`` behind.
            PayloadTooLarge: ``body`` is larger than a bus message carries; nothing was sent.
                Or the answer's parts pass ``max_answer_bytes`` (``answer_too_large``).
        """
        env = self.envelope(envelope)
        deadline = env.deadline
        assert deadline is not None  # noqa: S101  (envelope() always sets one)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline.remaining()
        # A request id this client cancelled before, sent again (a caller retrying after its
        # own timeout): model-proxies drop the attempts a cancel named, so go past them.
        attempt = max(env.attempt, self._cancelled.get(env.request_id, 0) + 1)
        progress = ReplyProgress()
        ended = sent = left = False
        replies: ReplyQueue | None = None
        try:
            # No timeout scope spans a yield: the consumer runs between yields, and a
            # cancellation aimed at this generator must not land in the consumer's code.
            round_no = 0
            while True:
                round_no += 1
                if loop.time() >= give_up:
                    break
                # The usual attempts, and more while the cluster settles after a reconnect.
                last = round_no >= self._attempts and not self._settling(loop.time())
                if round_no > self._attempts and last:
                    break
                token, replies = self._open(env, attempt, on_overflow)
                queue = replies.queue
                parts: Assembly | None = None
                expiry = Expiry(loop, queue)
                try:
                    headers = (
                        env if attempt == env.attempt else env.with_(attempt=attempt)
                    ).encode()
                    # Past this, this attempt is sent again or given up: a head that gets to
                    # it later (paused, or busy) drops it rather than serve a copy nobody reads.
                    headers[h.ACCEPT_BY] = str(int((time.time() + self._accept_timeout) * 1000))
                    room = self.payload_room  # (each attempt: a reconnect may change it)
                    if room and len(body) > room:  # (not nats-py's untyped MaxPayloadError)
                        raise PayloadTooLarge(f"request body exceeds the limit of {room} bytes")
                    await self._nc.publish(
                        subject, body, reply=f"{self._inbox}.{token}", headers=headers
                    )
                    sent = True
                    accepted = False
                    accept_by = loop.time() + self._accept_timeout
                    while True:
                        until = give_up if accepted else min(give_up, accept_by)
                        expiry.arm(progress.wait_until(until))
                        item = await queue.get()
                        if type(item) is Msg:
                            cost = len(item.data) + MSG_COST
                            replies.held -= cost
                            self.unread_bytes -= cost
                        elif item is OVERFLOWED:
                            raise too_slow(self._max_unread)
                        elif isinstance(item, Expired):
                            if item is not expiry.marker:
                                continue  # the marker of a wait that was re-armed since
                            item = None
                        msg = progress.check(
                            item,
                            past_deadline=until >= give_up,
                            last=last,
                            now=loop.time(),
                        )
                        if msg is None:
                            continue
                        accepted = True
                        self._answered_at = loop.time()
                        reply = decode_reply(msg.data, msg.headers)
                        if reply.kind is ReplyKind.ACCEPTED:  # (yielded only as ``MOVED``)
                            reply = progress.accepted(reply, attempt)  # else not admitted
                        elif reply.placement:  # a keep-alive naming its placement
                            if (kept := progress.heard(reply, attempt)) is None:
                                continue  # of a placement the request has left since
                            reply = kept
                        if not progress.admit(reply, loop.time()):
                            continue
                        if reply.kind is ReplyKind.PART:  # joined here, never yielded
                            parts = Assembly(self._max_answer) if parts is None else parts
                            parts.add(reply.body)
                            continue
                        if parts is not None and reply.kind is ReplyKind.FINAL:
                            reply = parts.whole(reply, progress.next_seq, progress.delivery)
                        ended = reply.kind is ReplyKind.FINAL or reply.kind is ReplyKind.ERROR
                        yield reply
                        if ended:
                            return
                except Resend as resend:
                    (log.debug if resend.pause else log.info)(
                        "request %s: sending it again after attempt %d: %s",
                        env.request_id,
                        attempt,
                        resend.why,
                    )
                    if resend.pause:
                        await asyncio.sleep(min(0.25, resend.pause * round_no))
                except DeadlineExceeded:
                    log.info(
                        "request %s: its deadline passed on attempt %d (accepted: %s, "
                        "chunks passed on: %d)",
                        env.request_id,
                        attempt,
                        accepted,
                        progress.next_seq,
                    )
                    raise
                finally:
                    expiry.cancel()
                    if self._pending.pop(token, None) is not None:
                        self.unread_bytes -= replies.held  # left unread: freed with the queue
                        replies.held = 0
                attempt += 1
            ended = True
            # Said when this process is the one cut off: the heads may be fine.
            cut_off = "" if self.connected else " (this process is not connected to NATS)"
            if loop.time() >= give_up:
                raise progress.deadline_passed(cut_off)
            raise ServiceUnavailable(
                f"no head accepted the request after {self._attempts} attempts{cut_off}",
                code="no_workers",
                retry_after=NO_WORKERS_RETRY_S,
            )
        except (GeneratorExit, asyncio.CancelledError):
            left = True  # the consumer closed this iterator, or its task was cancelled
            raise
        finally:
            overflowed = replies is not None and replies.overflowed  # its cancel went out
            if sent and not ended and not overflowed and (left or progress.sent_content):
                # The consumer walked away before the end (an HTTP client that left, before
                # or after the first token), or the reply path broke mid-stream: the
                # model-proxy serving the request stops the provider call and bills what it
                # cost; one that pulls it later from the queue drops it unserved. Not sent
                # for an error of this exchange's own before content (no head, no answer,
                # deadline passed): nobody holds such a request, and a caller may send the
                # same request id again (the batch runner does).
                await self._cancel(env, attempt)

    def _open(
        self, env: Envelope, attempt: int, on_overflow: Callable[[ApiError], None] | None
    ) -> tuple[str, ReplyQueue]:
        """A fresh reply token on the inbox, and where its messages go."""
        token = self._nuid.next().decode()
        replies = ReplyQueue(env, attempt, on_overflow)
        if not self._pending:  # the first after a quiet spell: reconnects count from now on
            self._watched_reconnects = self._nc.stats["reconnects"]
            self._busy.set()
        self._pending[token] = replies
        return token, replies

    async def _cancel(self, env: Envelope, attempt: int) -> None:
        """Tell the model-proxies this request's caller left. It names the last attempt sent:
        the same request id sent again later with a higher attempt is served."""
        self._cancelled.pop(env.request_id, None)
        self._cancelled[env.request_id] = attempt
        if len(self._cancelled) > CANCELLED_IDS:
            del self._cancelled[next(iter(self._cancelled))]
        headers = cancel_headers(env, attempt, (self._auth, self._key_hash))
        if headers is None:  # names no key: every model-proxy would refuse it
            return
        with contextlib.suppress(Exception):  # best effort: the deadline still ends the call
            await self._nc.publish(subjects.CANCEL, b"", headers=headers)

    async def cancel_as(self, env: Envelope, key_hash: str) -> None:
        """The last cancel of ``env``'s request again, proved with ``key_hash`` (the batch
        runner's, for a line sent under a rotated key's old hash: see its ``job``)."""
        attempt = self._cancelled.get(env.request_id)
        if attempt is not None and key_hash and key_hash != env.key_hash:
            await self._cancel(env.with_(key_hash=key_hash), attempt)

    async def request(
        self,
        subject: str,
        body: bytes,
        envelope: Envelope | Mapping[str, str] | None = None,
        *,
        on_keepalive: Callable[[], None] | None = None,
        on_moved: Callable[[], None] | None = None,
    ) -> Reply:
        """A non-streaming request: the final reply.

        Args:
            on_keepalive: told of each keep-alive, which a model-proxy sends while its
                provider works on the request (the batch runner tells a slow provider from a
                busy queue by them), but one of a placement left since (a reroute's).
            on_moved: told when the request moved back to a queue (a reroute's
                ``accepted``): no provider works on it now.

        Raises:
            ApiError: the error the workers replied with (typed by status), or any error of
                :meth:`exchange`.
        """
        # aclosing: returning mid-iteration must release the reply inbox now, not when the
        # garbage collector finalizes the generator.
        async with contextlib.aclosing(self.exchange(subject, body, envelope)) as replies:
            async for reply in replies:
                if reply.kind is ReplyKind.FINAL:
                    return reply
                if reply.kind is ReplyKind.ERROR:
                    raise error_from_reply(reply)
                if reply.kind is ReplyKind.KEEPALIVE:
                    if reply.moved and on_moved is not None:
                        on_moved()
                    if (not reply.moved or reply.placement) and on_keepalive is not None:
                        on_keepalive()
        raise ServiceUnavailable("the reply ended without an answer", code="no_answer")

    # ---- conveniences for internal Python callers ----

    async def chat(self, body: Mapping[str, Any], *, timeout: float | None = None) -> Any:
        """``chat.completions`` without streaming; returns the decoded response.

        Raises:
            InvalidRequest: ``body`` asks for a stream (``chat_stream`` gives one): its
                answer's chunks would be read as one JSON document.
            ApiError: as :meth:`request`.
        """
        return await self._whole(subjects.CHAT, body, timeout, "chat", "use chat_stream()")

    async def complete(self, body: Mapping[str, Any], *, timeout: float | None = None) -> Any:
        """Legacy ``completions`` (``llm.v1.complete``) without streaming; returns the decoded
        ``text_completion``.

        Raises:
            InvalidRequest: ``body`` asks for a stream (read one with :meth:`exchange`).
            ApiError: as :meth:`request`.
        """
        return await self._whole(subjects.COMPLETE, body, timeout, "complete", _EXCHANGE)

    async def embed(self, body: Mapping[str, Any], *, timeout: float | None = None) -> Any:
        """``embeddings`` (``llm.v1.embed``); returns the decoded ``list``, its vectors in the
        ``encoding_format`` asked (float lists, or base64 strings).

        Raises:
            ApiError: as :meth:`request`.
        """
        return await self._whole(subjects.EMBED, body, timeout, "embed", None)

    async def responses(self, body: Mapping[str, Any], *, timeout: float | None = None) -> Any:
        """The Responses API (``llm.v1.responses``) without streaming; returns the decoded
        ``response`` object.

        Raises:
            InvalidRequest: ``body`` asks for a stream (its replies are SSE events: read them
                with :meth:`exchange`).
            ApiError: as :meth:`request`.
        """
        return await self._whole(subjects.RESPONSES, body, timeout, "responses", _EXCHANGE)

    async def chat_stream(
        self, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """``chat.completions`` with ``stream: true``; yields decoded chunks.

        Raises:
            ApiError: as :meth:`request`, including errors that arrive mid-stream.
        """
        payload = _JSON.encode({**body, "stream": True})
        exchange = self.exchange(subjects.CHAT, payload, self._deadline(timeout))
        async with contextlib.aclosing(exchange) as replies:
            async for reply in replies:
                if reply.kind is ReplyKind.CHUNK:
                    yield _DECODE.decode(reply.body)
                elif reply.kind is ReplyKind.ERROR:
                    raise error_from_reply(reply)

    async def models(self) -> list[str]:
        reply = await self.request(subjects.MODELS, b"{}")
        return [m["id"] for m in _DECODE.decode(reply.body)["data"]]

    async def _whole(
        self,
        subject: str,
        body: Mapping[str, Any],
        timeout: float | None,
        name: str,
        for_chunks: str | None,
    ) -> Any:
        """The decoded answer of a request that is not streamed. A body asking for a stream
        is refused before anything is sent: its chunks would be read as one JSON document
        (msgspec's "Input data was truncated", the streamed answer's empty final)."""
        if for_chunks is not None and body.get("stream") is True:
            raise InvalidRequest(
                f"`stream`: {name}() returns the whole answer; {for_chunks} for its chunks",
                param="stream",
            )
        reply = await self.request(subject, _JSON.encode(dict(body)), self._deadline(timeout))
        return _DECODE.decode(reply.body)

    def _deadline(self, timeout: float | None) -> Envelope:
        return self.envelope(timeout=timeout)
