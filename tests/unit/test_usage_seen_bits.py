"""Accounting's memory of applied usage batches: one bit per USAGE stream sequence, in chunks
that expire, kept apart per stream instance; and how it learns which instance a message is of.

Real NATS and Valkey: tests/test_usage_once.py. Here the arithmetic, the reading of the
stream's info and when accounting asks for it again (the NATS request replaced by a list of
canned answers).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
import pytest

from switchyard.errors import BusError
from switchyard.limits import keys as rk
from switchyard.workers.accounting.stream import UsageStream, micros, parse_stream_info

pytestmark = pytest.mark.unit

DAY = 86400


def test_sequences_fill_one_chunk_then_the_next() -> None:
    assert rk.applied_slot(1) == (0, 1)
    assert rk.applied_slot(2**20 - 1) == (0, 2**20 - 1)
    assert rk.applied_slot(2**20) == (1, 0)
    assert rk.applied_slot(5 * 2**20 + 7) == (5, 7)


def test_chunks_are_usage_keys_named_by_stream_instance() -> None:
    # The accounting role may write sy:usage:* (stack/valkey.py): no ACL change needed.
    key = rk.applied(1_796_279_747_073_645, 3)
    assert key == "sy:usage:applied:1796279747073645:3"
    assert key.startswith("sy:usage:")
    assert rk.applied(1, 0) != rk.applied(2, 0)


def test_a_chunk_outlives_the_streams_messages() -> None:
    assert rk.applied_ttl_s(7 * DAY) == 8 * DAY  # the default USAGE max age, plus a day
    assert rk.applied_ttl_s(3600.5) == 3600 + DAY
    assert rk.applied_ttl_s(0) == 91 * DAY  # no max age: as long as the daily spend


def _info(created: str, ts: str | None, max_age_ns: int = 7 * DAY * 10**9) -> bytes:
    doc: dict[str, object] = {
        "type": "io.nats.jetstream.api.v1.stream_info_response",
        "config": {"name": "USAGE", "max_age": max_age_ns, "retention": "limits"},
        "created": created,
        "state": {"messages": 3, "first_seq": 1, "last_seq": 3},
    }
    if ts is not None:
        doc["ts"] = ts
    return msgspec.json.encode(doc)


def test_stream_info_names_the_instance_its_age_limit_and_the_servers_clock() -> None:
    # What nats-server 2.15 answers (nanosecond times, trimmed zeros).
    found = parse_stream_info(
        _info("2026-12-03T06:38:17.91612358Z", "2026-12-03T06:38:17.931896158Z"), 4
    )
    created = dt.datetime(2026, 12, 3, 6, 38, 17, 916124, tzinfo=dt.UTC)
    assert found.created_us == micros(created)
    assert found.checked_us == micros(created) + 15772
    assert found.max_age_s == 7 * DAY
    assert found.number == 4
    assert found.holds(found.created_us)
    assert not found.holds(found.created_us - 1)  # stored before it existed: a deleted stream's


def test_stream_info_without_a_server_clock_still_names_the_instance() -> None:
    found = parse_stream_info(_info("2026-12-03T06:38:17Z", None, max_age_ns=0), 1)
    assert found.checked_us == 0
    assert found.max_age_s == 0


@pytest.mark.parametrize(
    "reply",
    [
        b'{"type":"io.nats.jetstream.api.v1.stream_info_response","error":'
        b'{"code":404,"err_code":10059,"description":"stream not found"}}',
        b"not json",
        b'{"config": {}}',
    ],
)
def test_unusable_stream_info_is_a_bus_error(reply: bytes) -> None:
    with pytest.raises(BusError):
        parse_stream_info(reply, 1)


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _stamp(seconds: float) -> str:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    return when.isoformat().replace("+00:00", "Z")


BASE_US = micros(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


class Answers:
    """Stands in for the NATS request: hands out canned STREAM.INFO replies in order, each
    released by the test, and counts the questions."""

    def __init__(self) -> None:
        self.asked = 0
        self.replies: asyncio.Queue[bytes | BusError] = asyncio.Queue()

    async def __call__(self) -> bytes:
        self.asked += 1
        reply = await self.replies.get()
        if isinstance(reply, BusError):
            raise reply
        return reply

    def give(self, created_s: float, now_s: float) -> None:
        self.replies.put_nowait(_info(_stamp(created_s), _stamp(now_s)))


async def test_messages_older_than_the_last_answer_need_no_new_one() -> None:
    answers = Answers()
    stream = UsageStream(answers)
    answers.give(created_s=0, now_s=100)
    first = await stream.instance_of(BASE_US + _us(99))
    assert first.created_us == BASE_US
    assert answers.asked == 1
    for stored in (10, 99, 100):
        assert await stream.instance_of(BASE_US + _us(stored)) is first
    assert answers.asked == 1


async def test_a_message_less_than_the_slack_newer_needs_no_new_answer() -> None:
    """Asking for every newer message cost a request per pull (per request at one client)."""
    answers = Answers()
    stream = UsageStream(answers, slack_us=_us(1))
    answers.give(created_s=0, now_s=100)
    first = await stream.instance_of(BASE_US + _us(99), 2)
    # (Within a second, past the last sequence (3): a question here would wait for an answer
    # never given.)
    assert await asyncio.wait_for(stream.instance_of(BASE_US + _us(100.9), 4), 1) is first
    assert answers.asked == 1
    answers.give(created_s=0, now_s=102)
    await stream.instance_of(BASE_US + _us(101.5), 5)  # past the slack: asked again
    assert answers.asked == 2


async def test_a_recreated_streams_low_sequence_within_the_slack_asks_again() -> None:
    """A message stored just after the answer with a sequence at or below the stream's last
    one then cannot be that stream's: a recreated stream's (its bit under the old instance
    would mark it applied, and its usage would be lost)."""
    answers = Answers()
    stream = UsageStream(answers, slack_us=_us(1))
    answers.give(created_s=0, now_s=100)
    await stream.instance_of(BASE_US + _us(99), 3)
    answers.give(created_s=100.2, now_s=101)
    again = await asyncio.wait_for(stream.instance_of(BASE_US + _us(100.5), 1), 1)
    assert answers.asked == 2
    assert again.created_us == BASE_US + _us(100.2)


async def test_a_newer_message_asks_again_and_sees_a_recreated_stream() -> None:
    answers = Answers()
    stream = UsageStream(answers)
    answers.give(created_s=0, now_s=100)
    await stream.instance_of(BASE_US + _us(50))
    # The stream was deleted and created again at 200: a message stored at 201 is its.
    answers.give(created_s=200, now_s=202)
    again = await stream.instance_of(BASE_US + _us(201))
    assert answers.asked == 2
    assert again.created_us == BASE_US + _us(200)
    assert again.holds(BASE_US + _us(201))
    # A message the old stream delivered before it went, handled only now.
    assert not again.holds(BASE_US + _us(150))


async def test_messages_waiting_for_one_answer_share_it() -> None:
    answers = Answers()
    stream = UsageStream(answers)
    waiting = [
        asyncio.create_task(stream.instance_of(BASE_US + _us(stored))) for stored in range(1, 65)
    ]
    await asyncio.sleep(0.01)
    assert answers.asked == 1
    answers.give(created_s=0, now_s=100)
    found = await asyncio.gather(*waiting)
    assert answers.asked == 1
    assert all(f is found[0] for f in found)


async def test_an_answer_asked_before_a_message_came_is_not_enough_for_it() -> None:
    answers = Answers()
    stream = UsageStream(answers)
    early = asyncio.create_task(stream.instance_of(BASE_US + _us(1)))
    await asyncio.sleep(0.01)
    # This message came while that question was out, and was stored after the server's answer:
    # the stream may have been recreated in between, so it needs an answer of its own.
    late = asyncio.create_task(stream.instance_of(BASE_US + _us(150)))
    await asyncio.sleep(0.01)
    answers.give(created_s=0, now_s=100)
    assert (await early).created_us == BASE_US
    await asyncio.sleep(0.01)
    assert answers.asked == 2
    answers.give(created_s=120, now_s=160)
    assert (await late).created_us == BASE_US + _us(120)


async def test_a_server_clock_behind_the_message_does_not_make_it_ask_forever() -> None:
    answers = Answers()
    stream = UsageStream(answers)
    # The answering node's clock is behind the one that stored the message: an answer asked
    # after the message came is still about a stream that existed after it was delivered.
    answers.give(created_s=0, now_s=90)
    found = await stream.instance_of(BASE_US + _us(95))
    assert found.created_us == BASE_US
    assert answers.asked == 1


async def test_a_failed_answer_is_shared_by_the_messages_waiting_then_asked_again() -> None:
    answers = Answers()
    now = [0.0]
    stream = UsageStream(answers, retry_s=30.0, clock=lambda: now[0])
    waiting = [asyncio.create_task(stream.instance_of(BASE_US + _us(s))) for s in (1, 2, 3)]
    await asyncio.sleep(0.01)
    answers.replies.put_nowait(BusError("no info on stream USAGE: TimeoutError"))
    failed = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(f, BusError) for f in failed)
    assert answers.asked == 1  # one timeout, not one per waiting message
    now[0] = 29.0  # within the retry pause: failed at once, nobody asked (a refusing server)
    with pytest.raises(BusError):
        await stream.instance_of(BASE_US + _us(4))
    assert answers.asked == 1
    now[0] = 31.0
    answers.give(created_s=0, now_s=100)
    assert (await stream.instance_of(BASE_US + _us(4))).created_us == BASE_US
    assert answers.asked == 2
