"""A KV follower notices a watch that stopped delivering and watches again, on a real
nats-server. The two faults stand in for what a NATS node loss did to an edge's key watch
(nats-py's one attempt to re-create the consumer failed and nothing tried again; an entry the
server delivered never reached the follower): each is made here the way it looks from outside,
a consumer gone from the server with nats-py's own check stopped, and entries the server
delivered that the follower never got."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from switchyard.runtime.kvwatch import KvFollower
from tests.support import jetstream_server, until

pytestmark = pytest.mark.integration


def _sub(follower: KvFollower) -> Any:
    watcher: Any = follower._watcher
    return watcher._sub


async def test_a_watch_whose_consumer_is_gone_is_opened_again(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="gone")
        await kv.put("a", b"1")
        seen: dict[str, bytes | None] = {}
        follower = KvFollower(js, "gone", lambda k, v, _r: seen.__setitem__(k, v), check_s=0.5)
        await follower.start()
        assert seen == {"a": b"1"}
        sub = _sub(follower)
        sub._sub._jsi._hbtask.cancel()  # nats-py gave up on re-creating it (see the docstring)
        await js.delete_consumer("KV_gone", sub._consumer)
        await kv.put("b", b"2")
        await kv.delete("a")
        await until(lambda: seen.get("b") == b"2" and seen.get("a", b"") is None)
        assert follower.rewatches == 1
        revision = follower.revision
        await kv.put("c", b"3")  # the new watch follows live changes
        await until(lambda: seen.get("c") == b"3")
        assert follower.revision > revision
        await follower.stop()


async def test_entries_the_follower_never_got_are_fetched_again_once(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="lost")
        await kv.put("a", b"1")
        applied: list[tuple[str, bytes | None, int]] = []
        follower = KvFollower(js, "lost", lambda k, v, r: applied.append((k, v, r)), check_s=0.5)
        await follower.start()
        core = _sub(follower)._sub
        handler = core._cb
        dropped: list[Any] = []

        async def lose_two(msg: Any) -> None:  # delivered by the server, lost on the way
            if len(dropped) < 2:
                dropped.append(msg)
                return
            await handler(msg)

        core._cb = lose_two
        await kv.put("b", b"2")
        await kv.put("a", b"3")
        await until(lambda: len(dropped) == 2)
        await asyncio.sleep(0.2)
        assert [k for k, _, _ in applied] == ["a"]  # the follower is behind the server
        await until(lambda: ("a", b"3") in [(k, v) for k, v, _ in applied])
        # Applied once each, in revision order, nothing applied twice.
        assert [(k, v) for k, v, _ in applied] == [("a", b"1"), ("b", b"2"), ("a", b"3")]
        revisions = [r for _, _, r in applied]
        assert revisions == sorted(set(revisions))
        assert follower.rewatches == 1
        await asyncio.sleep(1.5)  # three more checks: caught up, so nothing more happens
        assert follower.rewatches == 1
        await follower.stop()


async def test_a_watch_that_cannot_be_stopped_is_left_behind(tmp_path: Path) -> None:
    """Stopping the old watch fails (its connection is in trouble): its follower task is
    ended after a moment, and the new watch brings what the old one did not apply."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="stuck")
        seen: dict[str, bytes | None] = {}
        follower = KvFollower(js, "stuck", lambda k, v, _r: seen.__setitem__(k, v), check_s=0.5)
        await follower.start()
        watcher: Any = follower._watcher
        sub = watcher._sub
        sub._sub._jsi._hbtask.cancel()

        async def refuse() -> None:
            raise ConnectionError("stand-in for a stop that fails")

        watcher.stop = refuse
        await js.delete_consumer("KV_stuck", sub._consumer)
        await kv.put("b", b"2")
        await until(lambda: seen.get("b") == b"2")
        assert follower.rewatches == 1
        await follower.stop()
