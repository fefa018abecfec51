"""The reply protocol (DESIGN §4), both directions: what a caller receives on its reply subject.

A request gets, in order: optionally ``accepted`` (the head stored it in a work queue),
``keepalive`` messages during provider silence, ``chunk`` messages (``Sy-Seq`` 0..n) for a
stream, or ``part`` messages (``Sy-Seq`` 0..n) for a whole answer larger than one message sent
to a caller that reads them (:mod:`switchyard.bus.parts`), and exactly one ``final`` or
``error`` message; then a zero-length message without
headers, which ends the stream and frees the server's reply mapping.

The writers (``send_*``) and the reader (:func:`decode_reply`, :func:`error_from_reply`) live
together here, so the head, the model-proxy, the client and the admin callers cannot disagree
on the shape. Admin services (secrets, control) answer with ``Sy-Status`` only: a reply without
``Sy-Kind`` is ``final`` when its status is 200 and ``error`` otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.errors import ApiError, error_for_status
from switchyard.schemas.openai import Usage, decode_error, error_body

__all__ = [
    "MOVED",
    "Reply",
    "ReplyKind",
    "chunk_headers",
    "decode_reply",
    "end_stream",
    "error_from_reply",
    "error_headers",
    "final_headers",
    "send_accepted",
    "send_begun",
    "send_chunk",
    "send_error",
    "send_final",
    "send_keepalive",
    "send_part",
    "send_probe",
]


class ReplyKind(enum.StrEnum):
    ACCEPTED = "accepted"
    KEEPALIVE = "keepalive"
    CHUNK = "chunk"
    PART = "part"
    FINAL = "final"
    ERROR = "error"


_KINDS = {kind.value: kind for kind in ReplyKind}
# Room left in a bus message for its headers: a payload may take the server's max_payload
# less this (the server refuses, and drops the connection of, a message whose payload and
# headers together pass it; nats-py checks only the payload).
HEADERS_ROOM = 16 * 1024


def payload_room(max_payload: int) -> int:
    """The largest body one message carries on a server of ``max_payload`` (0: not known)."""
    return max(0, max_payload - HEADERS_ROOM) if max_payload > 0 else 0


KEEPALIVE_HEADERS = {h.KIND: ReplyKind.KEEPALIVE.value}
ACCEPTED_HEADERS = {h.KIND: ReplyKind.ACCEPTED.value}
BEGUN_HEADERS = {**KEEPALIVE_HEADERS, h.BEGUN: "1"}


@dataclass(frozen=True, slots=True)
class Reply:
    """One message of a reply stream, decoded once.

    Attributes:
        kind: what the message is.
        body: the payload (an OpenAI response, chunk or error JSON; empty for signals).
        status: HTTP-like status (200 unless an error says otherwise).
        delivery: which delivery of the request a chunk (or part) belongs to (see
            :func:`send_chunk`); on a final sent after parts, the parts' delivery.
        seq: a chunk's (or part's) position in its stream (from 0); on a stream's final
            message, how many chunks came before it (on a final sent in parts, how many parts);
            -1 when absent (non-streaming replies).
        deployment: the deployment that answered (final and error messages, and a stream's
            first chunk), or whose queue took the request (``accepted``).
        attempts: how many deployments the request took (final and error messages, and a
            stream's first chunk).
        usage: tokens the provider reported (final messages), or None.
        usage_estimated: ``usage`` is Switchyard's estimate, the provider having reported
            none (``Sy-Usage-Estimated``): the figures billed, not a count to time tokens by.
        retry_after: seconds to wait before retrying (429/503 errors), or None.
        in_stream: an error whose stream already carried it, as its dialect's own error
            event in the last chunk (Responses and Messages streams): relay nothing more.
        request_id: the request's id (``accepted``, final and error messages): the head makes
            one for a caller that sent none, which it needs to cancel or re-send the request.
        priority: the class the request ran in (``interactive``, ``default``, ``batch``: the
            head's decision, which a key's cap or ``service_tier`` may have changed; a
            model-proxy's final and error messages, and a stream's first chunk).
        placement: which placement of the request an ``accepted`` names (1, 2, ...; 0 from
            older heads): a later one is where the request went next. On a model-proxy's
            keep-alive, the placement it serves (0 from older model-proxies): one of a
            placement the request has left since is not passed on (``ReplyProgress.heard``).
        begun: a keep-alive saying the provider's stream has begun, its opening held back
            until its first content (:func:`send_begun`); its ``delivery`` names which one.
        moved: a keep-alive the client makes (never sent) when a later placement of the
            request was accepted (a reroute, a re-send): what an earlier one said, as
            ``begun``, no longer holds. Also set on a model-proxy's keep-alive of a later
            placement that came before its ``accepted`` (then ``placement`` is not 0).
    """

    kind: ReplyKind
    body: bytes
    status: int = 200
    delivery: str = ""
    seq: int = -1
    deployment: str = ""
    attempts: int = 0
    usage: Usage | None = None
    usage_estimated: bool = False
    retry_after: float | None = None
    in_stream: bool = False
    request_id: str = ""
    priority: str = ""
    placement: int = 0
    begun: bool = False
    moved: bool = False


# What ``LLMClient.exchange`` yields when a later placement of the request was accepted.
MOVED = Reply(ReplyKind.KEEPALIVE, b"", moved=True)


def decode_reply(body: bytes, headers: Mapping[str, str] | None) -> Reply:
    """The :class:`Reply` of a reply message (never raises: a malformed reply header reads as
    its default, because the caller must still see the answer)."""
    hdrs = headers or {}
    status = _int(hdrs.get(h.STATUS), 200)
    kind = _KINDS.get(hdrs.get(h.KIND, ""))
    if kind is None:
        kind = ReplyKind.FINAL if status == 200 else ReplyKind.ERROR
    if kind is ReplyKind.CHUNK:
        seq = _int(hdrs.get(h.SEQ), -1)
        if seq:
            return Reply(kind, body, delivery=hdrs.get(h.ATTEMPT, ""), seq=seq)
        return Reply(
            kind,
            body,
            delivery=hdrs.get(h.ATTEMPT, ""),
            seq=seq,
            deployment=hdrs.get(h.DEPLOYMENT, ""),
            attempts=_int(hdrs.get(h.ATTEMPTS), 0),
            priority=hdrs.get(h.PRIORITY, ""),
        )
    if kind is ReplyKind.FINAL or kind is ReplyKind.ERROR:
        return Reply(
            kind,
            body,
            status=status,
            delivery=hdrs.get(h.ATTEMPT, ""),
            seq=_int(hdrs.get(h.SEQ), -1),
            deployment=hdrs.get(h.DEPLOYMENT, ""),
            attempts=_int(hdrs.get(h.ATTEMPTS), 0),
            usage=_usage(hdrs.get(h.USAGE)),
            usage_estimated=hdrs.get(h.USAGE_ESTIMATED) == "1",
            retry_after=h.parse_retry_after(hdrs.get(h.RETRY_AFTER)),
            in_stream=hdrs.get(h.IN_STREAM) == "1",
            request_id=hdrs.get(h.REQUEST_ID, ""),
            priority=hdrs.get(h.PRIORITY, ""),
        )
    if kind is ReplyKind.KEEPALIVE:
        return Reply(
            kind,
            body,
            delivery=hdrs.get(h.ATTEMPT, ""),
            begun=hdrs.get(h.BEGUN) == "1",
            placement=_int(hdrs.get(h.PLACEMENT), 0),
        )
    if kind is ReplyKind.PART:  # (after the others: a small answer pays no compare for it)
        return Reply(kind, body, delivery=hdrs.get(h.ATTEMPT, ""), seq=_int(hdrs.get(h.SEQ), -1))
    return Reply(
        kind,
        body,
        request_id=hdrs.get(h.REQUEST_ID, ""),
        deployment=hdrs.get(h.DEPLOYMENT, ""),
        placement=_int(hdrs.get(h.PLACEMENT), 0),
    )


def error_from_reply(reply: Reply) -> ApiError:
    """Rebuild the typed error a worker or service sent."""
    detail = decode_error(reply.body)
    if detail is None:
        return error_for_status(
            reply.status, "upstream error", provider=reply.deployment, retry_after=reply.retry_after
        )
    return error_for_status(
        reply.status,
        detail.message,
        provider=reply.deployment,
        retry_after=reply.retry_after,
        code=detail.code,
        param=detail.param,
        type=detail.type,
    )


def _int(value: str | None, default: int) -> int:
    if value is None or not value.isdecimal() or len(value) > 9:
        return default
    return int(value)


def _usage(value: str | None) -> Usage | None:
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 3 or not all(p.isdecimal() and len(p) <= 12 for p in parts):
        return None
    prompt, completion, total = (int(p) for p in parts)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


# ---- writers ----


async def send_accepted(
    nc: NATS, reply: str, request_id: str = "", deployment: str = "", placement: int = 0
) -> None:
    """``accepted``, naming the request's id (the one its caller sent, or the head's) and the
    deployment whose queue took it (a caller whose deadline passes before the answer names
    it: an edge's 504 carries it as ``x-switchyard-deployment``), as its ``placement``-th
    (``Envelope.placement``): the accepted of a reroute may arrive before the first one."""
    headers = dict(ACCEPTED_HEADERS)
    if request_id:
        headers[h.REQUEST_ID] = request_id
    if deployment:
        headers[h.DEPLOYMENT] = deployment
    if placement:
        headers[h.PLACEMENT] = str(placement)
    await nc.publish(reply, b"", headers=headers)


def _keepalive(base: dict[str, str], delivery: str, placement: int) -> dict[str, str]:
    """A keep-alive's headers: ``base``, and the delivery and placement it is of (when known)."""
    if not delivery and not placement:
        return base
    headers = dict(base)
    if delivery:
        headers[h.ATTEMPT] = delivery
    if placement:
        headers[h.PLACEMENT] = str(placement)
    return headers


async def send_keepalive(nc: NATS, reply: str, placement: int = 0) -> None:
    """A keep-alive of the ``placement``-th placement of the request (``Envelope.placement``):
    a caller ignores one of a placement the request has left since (it came late)."""
    await nc.publish(reply, b"", headers=_keepalive(KEEPALIVE_HEADERS, "", placement))


async def send_begun(nc: NATS, reply: str, delivery: str = "", placement: int = 0) -> None:
    """A keep-alive saying the provider's stream has begun: its opening chunks (a role alone)
    are held back until its first content, so that a failure before it can still be rerouted.
    An HTTP edge whose client's SDK times the wait for the response headers
    (``X-Stainless-Timeout``) may send them on hearing it; any other caller reads a keep-alive.
    ``delivery`` (the job's): a later delivery's keep-alive tells the edge this one is over.
    ``placement`` (as :func:`send_keepalive`'s): one that came after a reroute's ``accepted``
    is of a provider that no longer serves the request, and starts no stream."""
    await nc.publish(reply, b"", headers=_keepalive(BEGUN_HEADERS, delivery, placement))


async def send_probe(nc: NATS, reply: str, answer_to: str, placement: int = 0) -> None:
    """A keep-alive sent as a request (a probe): a caller may answer it with an empty message
    to ``answer_to`` to be known as there (docs/nats-api.md, "A caller that goes away")."""
    headers = _keepalive(KEEPALIVE_HEADERS, "", placement)
    await nc.publish(reply, b"", reply=answer_to, headers=headers)


async def announce_delivery(nc: NATS, reply: str, delivery: str, placement: int = 0) -> None:
    """A keep-alive naming the delivery about to serve the request: a caller that already
    has content from another delivery cannot take this one's and cancels it (before its
    provider call, when the model-proxy waits for that: see docs/nats-api.md)."""
    await nc.publish(reply, b"", headers=_keepalive(KEEPALIVE_HEADERS, delivery, placement))


def _name_deployment(
    headers: dict[str, str],
    deployment: str,
    attempts: int,
    request_id: str = "",
    priority: str = "",
) -> None:
    """Which deployment answered, after how many attempts, for which request, in which class
    (each only when known)."""
    if priority:
        headers[h.PRIORITY] = priority
    if request_id:
        headers[h.REQUEST_ID] = request_id
    if deployment:
        headers[h.DEPLOYMENT] = deployment
    if attempts:
        headers[h.ATTEMPTS] = str(attempts)


def chunk_headers(
    seq: int, delivery: str, *, deployment: str = "", attempts: int = 0, priority: str = ""
) -> dict[str, str]:
    headers = {h.KIND: ReplyKind.CHUNK.value, h.SEQ: str(seq), h.ATTEMPT: delivery}
    _name_deployment(headers, deployment, attempts, priority=priority)
    return headers


async def send_chunk(
    nc: NATS,
    reply: str,
    seq: int,
    body: bytes,
    delivery: str,
    *,
    deployment: str = "",
    attempts: int = 0,
    priority: str = "",
) -> None:
    """One streamed chunk. ``delivery`` differs between deliveries of the same request (a
    redelivery after a worker died), so a caller notices a restarted stream. The first chunk
    also names the deployment, the attempts and the class (an HTTP edge sends its headers with
    it)."""
    headers = chunk_headers(
        seq, delivery, deployment=deployment, attempts=attempts, priority=priority
    )
    await nc.publish(reply, body, headers=headers)


async def send_part(
    nc: NATS, reply: str, seq: int, body: bytes, delivery: str, *, ack: str = ""
) -> None:
    """One part of a whole answer larger than one message (:mod:`switchyard.bus.parts`): the
    framing of a chunk (``Sy-Seq``, ``Sy-Attempt``), under its own kind, so a reader of a
    stream never takes it for content of its own. ``ack``: the subject its caller
    acknowledges it on (its reply subject; none for a caller that does not acknowledge)."""
    headers = {h.KIND: ReplyKind.PART.value, h.SEQ: str(seq), h.ATTEMPT: delivery}
    await nc.publish(reply, body, reply=ack, headers=headers)


async def end_stream(nc: NATS, reply: str) -> None:
    """The terminator: zero bytes, no headers. NATS closes a cross-account reply path when it
    passes one, and drops whatever is sent to it afterwards, so it must come last of all: a
    worker that will send an answer again (a replay) leaves it off the first copy."""
    await nc.publish(reply, b"")


def final_headers(
    *,
    deployment: str = "",
    attempts: int = 0,
    usage: Usage | None = None,
    chunks: int | None = None,
    request_id: str = "",
    priority: str = "",
    delivery: str = "",
    usage_estimated: bool = False,
) -> dict[str, str]:
    headers = {h.KIND: ReplyKind.FINAL.value, h.STATUS: "200"}
    if chunks is not None:
        # A stream's final says how many chunks it follows: a caller missing some (lost while
        # the worker's NATS node failed) waits for the worker to send them again.
        headers[h.SEQ] = str(chunks)
    if delivery:  # (a final after parts: the caller checks it follows its own delivery's)
        headers[h.ATTEMPT] = delivery
    _name_deployment(headers, deployment, attempts, request_id, priority)
    if usage is not None:
        # The edge corrects its TPM estimate with it.
        headers[h.USAGE] = f"{usage.prompt_tokens},{usage.completion_tokens},{usage.total_tokens}"
        if usage_estimated:  # (not the provider's count: the edge times no tokens by it)
            headers[h.USAGE_ESTIMATED] = "1"
    return headers


async def send_final(
    nc: NATS,
    reply: str,
    body: bytes,
    *,
    deployment: str = "",
    attempts: int = 0,
    usage: Usage | None = None,
    chunks: int | None = None,
    end: bool = True,
    request_id: str = "",
    priority: str = "",
    delivery: str = "",
    usage_estimated: bool = False,
) -> None:
    """The final message (status 200), then the terminator unless ``end`` is False (more
    may follow: see :func:`end_stream`). ``delivery``: the parts' it follows, if any;
    ``usage_estimated``: ``usage`` is Switchyard's estimate (``Sy-Usage-Estimated``)."""
    headers = final_headers(
        deployment=deployment,
        attempts=attempts,
        usage=usage,
        chunks=chunks,
        request_id=request_id,
        priority=priority,
        delivery=delivery,
        usage_estimated=usage_estimated,
    )
    await nc.publish(reply, body, headers=headers)
    if end:
        await end_stream(nc, reply)


def error_headers(
    exc: ApiError,
    *,
    deployment: str = "",
    attempts: int = 0,
    in_stream: bool = False,
    request_id: str = "",
    usage: Usage | None = None,
    chunks: int | None = None,
    priority: str = "",
) -> dict[str, str]:
    headers = {h.KIND: ReplyKind.ERROR.value, h.STATUS: str(exc.status)}
    if exc.retry_after is not None:
        headers[h.RETRY_AFTER] = f"{exc.retry_after:g}"
    if in_stream:
        headers[h.IN_STREAM] = "1"
    if chunks is not None:  # as a stream's final: a reader missing chunks waits for them
        headers[h.SEQ] = str(chunks)
    if usage is not None:  # a stream that failed after content still used tokens
        headers[h.USAGE] = f"{usage.prompt_tokens},{usage.completion_tokens},{usage.total_tokens}"
    _name_deployment(headers, deployment, attempts, request_id, priority)
    return headers


async def send_error(
    nc: NATS,
    reply: str,
    exc: ApiError,
    *,
    deployment: str = "",
    attempts: int = 0,
    end: bool = True,
    in_stream: bool = False,
    request_id: str = "",
    usage: Usage | None = None,
    chunks: int | None = None,
    priority: str = "",
) -> None:
    """An OpenAI-shaped error as the final message, then the terminator unless ``end`` is
    False. ``in_stream``: the stream's last chunk already told the client in its dialect
    (``Sy-Error-In-Stream``); the error still ends the reply, so every reader of the bus
    sees the request failed. Such an error also carries what a stream's final would: the
    chunks it follows (``Sy-Seq``: a reader missing the last one, the error event, waits for
    its replay) and the tokens used (``Sy-Usage``: the edge's TPM window counts them)."""
    headers = error_headers(
        exc,
        deployment=deployment,
        attempts=attempts,
        in_stream=in_stream,
        request_id=request_id,
        usage=usage,
        chunks=chunks,
        priority=priority,
    )
    await nc.publish(reply, error_body(exc), headers=headers)
    if end:
        await end_stream(nc, reply)
