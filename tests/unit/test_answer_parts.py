"""Whole answers larger than one bus message, in parts: the framing, the caller's ordering and
cap, and who is let have parts at all (``Sy-Parts-Max``)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus.envelope import Envelope, MalformedHeader
from switchyard.bus.parts import Assembly, announced, answer_room
from switchyard.bus.replies import HEADERS_ROOM, Reply, ReplyKind, decode_reply, final_headers
from switchyard.bus.unread import MSG_COST
from switchyard.client import LLMClient
from switchyard.config.settings import IngressSettings, ModelProxySettings
from switchyard.errors import PayloadTooLarge, ProviderError
from switchyard.runtime.reply_wait import GAP_WAIT_S, ReplyProgress
from switchyard.workers.modelproxy import redelivery
from switchyard.workers.modelproxy.whole import AnswerRooms

pytestmark = pytest.mark.unit

MAX_PAYLOAD = 8 * 2**20
ONE_MESSAGE = MAX_PAYLOAD - HEADERS_ROOM
CAP = 64 * 2**20  # modelproxy.max_answer_bytes' default


def part(seq: int, delivery: str = "1.1") -> Reply:
    return decode_reply(f"p{seq}".encode(), {h.KIND: "part", h.SEQ: str(seq), h.ATTEMPT: delivery})


def test_a_part_is_read_with_a_chunks_framing_under_its_own_kind() -> None:
    reply = part(3, "2.1")
    assert (reply.kind, reply.seq, reply.delivery, reply.body) == (ReplyKind.PART, 3, "2.1", b"p3")
    final = decode_reply(b"", final_headers(chunks=4, usage=None))
    assert (final.kind, final.seq) == (ReplyKind.FINAL, 4)


def test_only_a_caller_that_announced_parts_may_get_more_than_one_message() -> None:
    assert answer_room(MAX_PAYLOAD, "", CAP) == ONE_MESSAGE  # an old caller: today's 413 past it
    assert answer_room(MAX_PAYLOAD, str(64 * 2**20), CAP) == 64 * 2**20
    assert answer_room(MAX_PAYLOAD, "1024", CAP) == ONE_MESSAGE  # never less than one message
    assert answer_room(0, "1024", CAP) == 0  # max_payload unknown: no bound, as before
    assert announced("") == 0
    for bad in ("-1", "lots", "1e9", "1234567890"):
        with pytest.raises(MalformedHeader) as info:
            announced(bad)
        assert info.value.param == h.PARTS_MAX


def test_a_model_proxy_sends_no_more_in_parts_than_its_own_cap() -> None:
    """A caller announcing 900 MB could make a model-proxy read and hold that much: the
    model-proxy's ``modelproxy.max_answer_bytes`` bounds it, whatever is announced."""
    assert ModelProxySettings().max_answer_bytes == CAP
    assert answer_room(MAX_PAYLOAD, "999999999", 16 * 2**20) == 16 * 2**20
    assert answer_room(MAX_PAYLOAD, str(12 * 2**20), 16 * 2**20) == 12 * 2**20
    assert answer_room(MAX_PAYLOAD, "999999999", 0) == ONE_MESSAGE  # 0: no parts at all
    assert AnswerRooms(16 * 2**20).of(MAX_PAYLOAD, "999999999") == 16 * 2**20


def test_the_announcement_travels_in_the_envelope_as_sent() -> None:
    env = Envelope.decode({h.REQUEST_ID: "r1", h.PARTS_MAX: "67108864"})
    assert env.parts_max == "67108864"
    assert Envelope.decode(env.encode()) == env
    assert h.PARTS_MAX not in Envelope(request_id="r1").encode()  # absent: not sent
    with pytest.raises(MalformedHeader):
        Envelope.decode({h.PARTS_MAX: "1" * 10})  # past its size limit


@pytest.mark.parametrize("bad", ["12a", "-1", "1e9", "\u0661\u0662\u0663", "\u00b2", "\uff11"])
def test_a_malformed_announcement_is_refused_where_the_envelope_is_read(bad: str) -> None:
    """Refused by the head at once (it was queued, then the model-proxy's 400): and only
    ASCII digits (``isdecimal`` took Arabic-Indic and full-width ones)."""
    with pytest.raises(MalformedHeader) as info:
        Envelope.decode({h.REQUEST_ID: "r1", h.PARTS_MAX: bad})
    assert info.value.param == h.PARTS_MAX
    with pytest.raises(MalformedHeader):
        announced(bad)


def test_a_client_never_announces_more_than_a_head_takes() -> None:
    """Ten digits were refused by every head (``Sy-Parts-Max`` is nine at most)."""
    llm = LLMClient(NATS(), max_answer_bytes=10**10)  # never connected
    sent = llm.envelope(Envelope(request_id="r1")).encode()
    assert sent[h.PARTS_MAX] == "999999999"
    assert Envelope.decode(sent).parts_max == "999999999"


def test_acknowledging_parts_travels_in_the_envelope() -> None:
    """``Sy-Parts-Ack: 1`` says the caller acknowledges parts (flow control); anything else is
    no such promise, and an absent one stays absent (an older model-proxy, head or caller
    ignores or never sends it: parts back-to-back, as before)."""
    env = Envelope.decode({h.REQUEST_ID: "r1", h.PARTS_MAX: "67108864", h.PARTS_ACK: "1"})
    assert env.parts_ack
    assert Envelope.decode(env.encode()) == env
    assert not Envelope.decode({h.REQUEST_ID: "r1", h.PARTS_ACK: "0"}).parts_ack
    assert h.PARTS_ACK not in Envelope(request_id="r1").encode()
    with pytest.raises(MalformedHeader):
        Envelope.decode({h.PARTS_ACK: "11"})  # past its size limit


def test_a_client_that_reads_parts_says_it_acknowledges_them() -> None:
    """LLMClient (the edges' too) answers every message that asks for an answer (a probe, a
    part): one that reads parts says so, one that reads none says nothing."""
    sent = LLMClient(NATS(), max_answer_bytes=10**6).envelope(Envelope(request_id="r1")).encode()
    assert sent[h.PARTS_ACK] == "1"
    given = Envelope(request_id="r1", parts_max="2048")  # (an edge's: its own Sy-Parts-Max)
    assert LLMClient(NATS(), max_answer_bytes=10**6).envelope(given).parts_ack
    none = LLMClient(NATS(), max_answer_bytes=0).envelope(Envelope(request_id="r1")).encode()
    assert h.PARTS_ACK not in none
    assert h.PARTS_MAX not in none


def test_parts_are_admitted_once_and_in_order_and_the_final_waits_for_all() -> None:
    """A replay (after a failover) sends every part again: each is taken once; a final whose
    ``Sy-Seq`` is ahead of the parts taken waits for the replay."""
    progress = ReplyProgress()
    parts = Assembly(1024)
    final = Reply(ReplyKind.FINAL, b"", seq=3, delivery="1.1")
    order = [part(0), part(2), final, part(0), part(1), part(2), final]
    finals = []
    for n, reply in enumerate(order):
        if not progress.admit(reply, now=float(n)):
            continue
        if reply.kind is ReplyKind.PART:
            parts.add(reply.body)
        else:
            finals.append(parts.whole(reply, progress.next_seq, progress.delivery))
    assert [r.body for r in finals] == [b"p0p1p2"]
    assert finals[0].seq == 3


@pytest.mark.parametrize(
    "final",
    [
        Reply(ReplyKind.FINAL, b'{"a whole": "answer"}'),  # another delivery's, one message
        Reply(ReplyKind.FINAL, b"", seq=1, delivery="1.1"),  # says fewer parts than taken
        Reply(ReplyKind.FINAL, b"", seq=2, delivery="1.2"),  # another delivery's parts'
        Reply(ReplyKind.FINAL, b"", seq=2),  # names no delivery
    ],
)
def test_a_final_that_does_not_follow_the_parts_taken_is_an_error(final: Reply) -> None:
    progress = ReplyProgress()
    parts = Assembly(1024)
    for n in (0, 1):
        assert progress.admit(part(n), now=0.0)
        parts.add(f"p{n}".encode())
    assert progress.admit(final, now=0.0)
    with pytest.raises(ProviderError) as info:
        parts.whole(final, progress.next_seq, progress.delivery)
    assert info.value.code == "stream_interrupted"


def test_a_final_after_parts_names_their_delivery() -> None:
    final = decode_reply(b"", final_headers(chunks=2, usage=None, delivery="3.1"))
    assert (final.seq, final.delivery) == (2, "3.1")
    assert parts_of(final) == b"p0p1"


def parts_of(final: Reply) -> bytes:
    progress = ReplyProgress()
    parts = Assembly(1024)
    for n in (0, 1):
        assert progress.admit(part(n, "3.1"), now=0.0)
        parts.add(f"p{n}".encode())
    return parts.whole(final, progress.next_seq, progress.delivery).body


def test_a_lost_part_ends_the_request_with_an_error_not_a_short_answer() -> None:
    progress = ReplyProgress()
    assert progress.admit(part(0), now=0.0)
    assert not progress.admit(part(2), now=1.0)  # part 1 was lost
    assert not progress.admit(Reply(ReplyKind.FINAL, b"", seq=3), now=1.0)
    with pytest.raises(ProviderError) as info:
        progress.check(None, past_deadline=False, last=False, now=1.0 + GAP_WAIT_S)
    assert info.value.code == "stream_interrupted"


def test_another_delivery_after_parts_ends_the_request() -> None:
    """A model-proxy that died mid-way: its request's next delivery announces itself (or
    sends its own parts), which cannot follow the first's."""
    progress = ReplyProgress()
    assert progress.admit(part(0, "1.1"), now=0.0)
    with pytest.raises(ProviderError) as info:
        progress.admit(Reply(ReplyKind.KEEPALIVE, b"", delivery="1.2"), now=1.0)
    assert info.value.code == "stream_interrupted"
    with pytest.raises(ProviderError):
        progress.admit(part(0, "1.2"), now=1.0)


def test_parts_past_the_cap_are_a_413_and_nothing_more_is_held() -> None:
    parts = Assembly(10)
    parts.add(b"12345")
    with pytest.raises(PayloadTooLarge) as info:
        parts.add(b"678901")
    assert info.value.status == 413
    assert info.value.code == "answer_too_large"
    assert info.value.no_retry
    assert parts.whole(Reply(ReplyKind.FINAL, b"", seq=0), 0, "").body == b""


def test_the_model_proxy_reads_an_announcement_once_and_a_malformed_one_each_time() -> None:
    rooms = AnswerRooms(CAP)
    assert rooms.of(MAX_PAYLOAD, "67108864") == 64 * 2**20
    assert rooms.of(MAX_PAYLOAD, "67108864") == 64 * 2**20  # (from the memo)
    assert rooms.of(MAX_PAYLOAD, "") == ONE_MESSAGE
    for _ in range(2):
        with pytest.raises(MalformedHeader):
            rooms.of(MAX_PAYLOAD, "many")
    for n in range(AnswerRooms.KEPT + 5):  # many values: the memo stays bounded
        assert rooms.of(MAX_PAYLOAD, str(ONE_MESSAGE + n)) == ONE_MESSAGE + n
    assert len(rooms._rooms) <= AnswerRooms.KEPT


def test_parts_are_opt_in() -> None:
    """No flow control yet (docs/nats-api.md, "Answers in parts"): the edges announce no
    parts unless ``ingress.max_answer_bytes`` says so."""
    assert IngressSettings().max_answer_bytes == 0


@pytest.mark.parametrize("kind", ["part", "chunk"])
async def test_an_empty_message_past_the_unread_bound_does_not_end_the_request(kind: str) -> None:
    """An answer's parts (or a stream's chunks) held unread just under ``max_unread_bytes``,
    then its empty final: that final crossed the bound, was no part, and ended the request
    with ``reader_too_slow`` (408), every time, for answers in a ~1 KiB window of sizes."""
    bound = 64 * 1024
    llm = LLMClient(NATS(), max_unread_bytes=bound, max_answer_bytes=10**6)  # never connected
    token, replies = llm._open(Envelope(request_id="r1"), 1, None)
    subject = f"{llm._inbox}.{token}"
    first, second = 30_000, bound - 200 - (30_000 + MSG_COST) - MSG_COST
    for seq, size in enumerate((first, second)):
        headers = {h.KIND: kind, h.SEQ: str(seq), h.ATTEMPT: "1.1"}
        await llm._on_reply(
            Msg(_client=llm._nc, subject=subject, data=b"x" * size, headers=headers)
        )
    assert replies.held == bound - 200
    final = final_headers(chunks=2, usage=None, delivery="1.1")
    await llm._on_reply(Msg(_client=llm._nc, subject=subject, data=b"", headers=final))
    await llm._on_reply(Msg(_client=llm._nc, subject=subject))  # the terminator
    assert not replies.overflowed
    assert replies.queue.qsize() == 4


async def test_keep_alives_past_the_unread_bound_are_not_taken_without_end() -> None:
    """Empty finals and the terminator are taken past the bound; keep-alives only within the
    parts' cap (none when parts are off): any number of them could come (a review), and a
    consumer that far behind is too slow."""
    bound = 64 * 1024
    llm = LLMClient(NATS(), max_unread_bytes=bound)  # never connected; parts off
    token, replies = llm._open(Envelope(request_id="r1"), 1, None)
    subject = f"{llm._inbox}.{token}"
    headers = {h.KIND: "chunk", h.SEQ: "0", h.ATTEMPT: "1.1"}
    size = bound - 200 - MSG_COST
    await llm._on_reply(Msg(_client=llm._nc, subject=subject, data=b"x" * size, headers=headers))
    alive = {h.KIND: "keepalive"}
    await llm._on_reply(Msg(_client=llm._nc, subject=subject, data=b"", headers=alive))
    assert replies.overflowed


async def test_a_keep_alive_among_parts_past_the_unread_bound_is_taken() -> None:
    """Parts burst past ``max_unread_bytes`` by design; the model-proxy's heartbeat may send a
    keep-alive among them, and it ended the answer with ``reader_too_slow`` (a review)."""
    bound = 64 * 1024
    llm = LLMClient(NATS(), max_unread_bytes=bound, max_answer_bytes=10**6)  # never connected
    token, replies = llm._open(Envelope(request_id="r1"), 1, None)
    subject = f"{llm._inbox}.{token}"
    part = {h.KIND: "part", h.SEQ: "0", h.ATTEMPT: "1.1"}
    await llm._on_reply(Msg(_client=llm._nc, subject=subject, data=b"x" * bound, headers=part))
    alive = {h.KIND: "keepalive"}
    await llm._on_reply(Msg(_client=llm._nc, subject=subject, data=b"", headers=alive))
    assert not replies.overflowed


def test_a_redelivery_waits_for_its_caller_only_where_parts_could_have_gone() -> None:
    """A redelivered request waits up to 0.5 s for its caller's cancel before its provider
    call: every non-streamed one of a caller announcing parts did, token counts too (their
    answer is a few bytes), and those whose room was one message anyway."""
    rooms = AnswerRooms(CAP)
    parts_max = str(CAP)

    def asks(op: str, announced: str, *, stream: bool = False) -> bool:
        env = Envelope(request_id="r1", op=op, parts_max=announced, stream=stream)
        room = rooms.of(MAX_PAYLOAD, "" if stream else announced)
        return redelivery.asks(env, room, ONE_MESSAGE)

    assert asks("embed", parts_max)  # its earlier delivery may have sent parts
    assert asks("chat", parts_max)
    assert asks("chat", "", stream=True)  # a stream's caller is always asked
    assert asks("chat", parts_max, stream=True)
    assert not asks("count_tokens", parts_max)
    assert not asks("input_tokens", parts_max)
    assert not asks("chat", "")  # a caller that reads no parts
    assert not asks("embed", "1024")  # its room is one message: never in parts
    assert not redelivery.asks(Envelope(request_id="r", op="embed", parts_max=parts_max), 0, 0)
