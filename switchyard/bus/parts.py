"""Whole answers larger than one bus message, carried in parts (docs/nats-api.md, "Answers in
parts").

A non-streamed answer travels to its caller as one message, which the server's ``max_payload``
bounds (8 MiB less 16 KiB for headers on the rendered configs): an embeddings call of 2,048
inputs of 3,072 dimensions (~60 MB of JSON) or a long answer with logprobs could not be
answered at all. A caller that says it reads parts (``Sy-Parts-Max: <bytes>`` on its request:
the HTTP edges and :class:`switchyard.client.LLMClient` send it when configured to, which is
off by default; with ``Sy-Parts-Ack`` they come with flow control, :mod:`.part_acks`,
else back-to-back) gets such an answer as
``part`` messages on its reply subject, framed and ordered as a stream's chunks are
(``Sy-Seq`` 0..n-1, ``Sy-Attempt`` naming the delivery, sent again whole after a failover),
then the ``final`` with an empty body, ``Sy-Seq: n`` and the parts' ``Sy-Attempt``, then the
terminator. The caller joins them (:class:`Assembly`) into the final's body. An answer past
the caller's bytes is the 413 ``answer_too_large`` it always was; so is every answer larger
than one message for a caller that sent no ``Sy-Parts-Max``: one that cannot read parts never
gets them.
"""

from __future__ import annotations

import dataclasses

from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.bus.envelope import MalformedHeader
from switchyard.bus.replies import Reply, payload_room, send_part
from switchyard.errors import PayloadTooLarge, ProviderError

__all__ = [
    "MAX_ANNOUNCED",
    "Assembly",
    "announced",
    "answer_room",
    "send_parts",
    "too_large",
]

# The most ``Sy-Parts-Max`` may say (nine digits: ~953 MiB).
MAX_ANNOUNCED = 999_999_999


def announced(value: str) -> int:
    """The bytes a ``Sy-Parts-Max`` value allows (0 for none: a caller that reads no parts).

    Raises:
        MalformedHeader: not a whole number of bytes of at most nine digits (a 400).
    """
    if not value:
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_ANNOUNCED)):
        raise MalformedHeader(h.PARTS_MAX, f"must be a whole number of bytes up to {MAX_ANNOUNCED}")
    return int(value)


def answer_room(max_payload: int, parts_max: str, cap: int) -> int:
    """The largest whole answer a request may get on a server of ``max_payload`` (0: not
    known, no bound): one message's body, or, when that is more, the smaller of what a caller
    that reads parts announced in ``parts_max`` and ``cap``, the most this model-proxy sends
    in parts (``modelproxy.max_answer_bytes``: a caller cannot make it hold more).

    Raises:
        MalformedHeader: ``parts_max`` is not a number of bytes.
    """
    room = payload_room(max_payload)
    if not parts_max or not room:
        return room
    return max(room, min(announced(parts_max), cap))


async def send_parts(nc: NATS, reply: str, body: bytes, room: int, delivery: str) -> int:
    """``body`` as parts of at most ``room`` bytes each, in order; how many were sent (the
    ``Sy-Seq`` of the final that follows them)."""
    count = 0
    for start in range(0, len(body), room):
        await send_part(nc, reply, count, body[start : start + room], delivery)
        count += 1
    return count


def too_large(size: int, limit: int) -> PayloadTooLarge:
    """The 413 of a whole answer whose parts pass what its caller reads (a model-proxy
    refuses such an answer before it sends a part: this is a caller's own guard)."""
    return PayloadTooLarge(
        f"the answer is more than {size / 2**20:.1f} MiB, more than the {limit / 2**20:.1f} MiB "
        "a whole answer may be: ask for less (fewer embedding inputs, a lower max_tokens) or "
        "stream it",
        code="answer_too_large",
    )


class Assembly:
    """The parts of one whole answer received so far (in order: the caller's reply progress
    admits them as it admits a stream's chunks), at most ``limit`` bytes in all."""

    __slots__ = ("_parts", "limit", "size")

    def __init__(self, limit: int) -> None:
        self._parts: list[bytes] = []
        self.limit = limit
        self.size = 0

    def add(self, body: bytes) -> None:
        """Keep the next part.

        Raises:
            PayloadTooLarge: the parts so far pass ``limit`` (413 ``answer_too_large``);
                nothing more is kept.
        """
        self.size += len(body)
        if self.size > self.limit:
            self._parts.clear()
            raise too_large(self.size, self.limit)
        self._parts.append(body)

    def whole(self, final: Reply, next_seq: int, delivery: str | None) -> Reply:
        """``final`` (whose own body is empty) with the parts joined as its body.

        Raises:
            ProviderError: ``final`` does not follow exactly the parts taken (``next_seq``,
                the next part expected, and ``delivery``, theirs): another delivery's, or one
                that says fewer parts (502 ``stream_interrupted``, never a cut answer).
        """
        if final.seq != next_seq or final.delivery != delivery:
            self._parts.clear()
            raise ProviderError(
                "the answer's parts and its final message do not match (its worker failed?)",
                provider=final.deployment,
                code="stream_interrupted",
            )
        body = b"".join(self._parts)
        self._parts.clear()
        return dataclasses.replace(final, body=body)
