"""JetStream API replies control reads (consumer info and lists), with only the fields used."""

from __future__ import annotations

import msgspec


class Seq(msgspec.Struct, frozen=True):
    consumer_seq: int = 0
    stream_seq: int = 0


class ConsumerConfig(msgspec.Struct, frozen=True):
    max_ack_pending: int = 0
    filter_subject: str = ""


class JsError(msgspec.Struct, frozen=True):
    code: int = 0
    description: str = ""


class Consumer(msgspec.Struct, frozen=True):
    """One consumer's state: an entry of ``CONSUMER.LIST``, or ``CONSUMER.INFO``'s answer
    (``error`` set when the server refused)."""

    name: str = ""
    config: ConsumerConfig = ConsumerConfig()
    delivered: Seq = Seq()
    ack_floor: Seq = Seq()
    num_pending: int = 0
    num_ack_pending: int = 0
    num_redelivered: int = 0
    error: JsError | None = None


class ConsumerPage(msgspec.Struct, frozen=True):
    total: int = 0
    offset: int = 0
    limit: int = 0
    consumers: list[Consumer] | None = None
    error: JsError | None = None


CONSUMER = msgspec.json.Decoder(Consumer)
CONSUMER_PAGE = msgspec.json.Decoder(ConsumerPage)
