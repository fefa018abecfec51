"""An edge whose key watch fell behind still lets a key created a moment ago in, on a real
nats-server. A CI run's failover suite saw both edges refuse a new key for 4 s after a NATS
node loss (40 answers 401 ``invalid_api_key``, then 3,187 answers 429
``too_many_failed_authentications`` to that client's address): the watch had not delivered it.
The stalled watch is made here as :mod:`tests.test_kv_follower` makes it (its consumer gone,
nats-py's own check stopped); the key ring then reads an unknown key of ours from the bucket's
leader, and the watch is opened again within about a second, not after the follower's two
checks (10-20 s)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.config.settings import Settings
from switchyard.errors import AuthenticationFailed, RateLimited, ServiceUnavailable
from switchyard.ingress import keyring
from switchyard.ingress.edge import Edge
from switchyard.ingress.keyring import KeyRing
from switchyard.schemas.keys import hash_key, new_api_key, record_name
from tests.stacks import Stack
from tests.support import jetstream_server, until

pytestmark = pytest.mark.integration


def _peer(address: str) -> dict[str, Any]:
    """The ASGI scope of a request from ``address``, as the edge's routes pass it."""
    return {"client": (address, 50000), "headers": []}


def _stall(ring: KeyRing) -> Any:
    """The ring's watch stops delivering, as after the node loss; the consumer to delete."""
    watcher: Any = ring._follower._watcher
    sub = watcher._sub
    sub._sub._jsi._hbtask.cancel()  # nats-py gave up on re-creating it
    return sub._consumer


def _count_reads(js: Any) -> list[str]:
    """The subjects of every read the ring makes through ``js`` (a spy on ``get_msg``; the
    server still answers each)."""
    reads: list[str] = []
    real = js.get_msg

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("subject", ""))
        return await real(*args, **kwargs)

    js.get_msg = counted
    return reads


async def test_a_key_the_watch_has_not_delivered_is_read_from_the_bucket(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.create_key_value(bucket=subjects.KEYS_BUCKET, history=1)
        admin = KeyAdmin(js)
        refused: list[tuple[str, str]] = []
        ring = KeyRing(js, on_refused=lambda key_id, e: refused.append((key_id, e.code)))
        await ring.start()
        edge = Edge(Settings())
        edge.keys = ring
        try:
            await js.delete_consumer(f"KV_{subjects.KEYS_BUCKET}", _stall(ring))
            api_key, record = await admin.create("fresh")
            await asyncio.sleep(0.3)
            assert len(ring) == 0  # the watch did not deliver it

            assert (await edge.authenticate(api_key, _peer("10.0.0.1"))).id == record.id
            assert ring.found_by_lookup == 1
            assert not edge.auth_failures  # a key found counts as no failure

            # The watch is opened again within about a second, and follows changes again:
            # a revocation reaches the ring (and the requests it has running) without a lookup.
            await until(lambda: ring._follower.rewatches == 1, timeout=5)
            await admin.revoke(record.id)
            await until(lambda: refused == [(record.id, "api_key_revoked")])
            with pytest.raises(AuthenticationFailed) as revoked:
                await edge.authenticate(api_key, _peer("10.0.0.1"))
            assert revoked.value.code == "api_key_revoked"
            assert ring.found_by_lookup == 1
        finally:
            await ring.stop()


async def test_an_unknown_key_is_read_once_and_still_counts_as_a_failure(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.create_key_value(bucket=subjects.KEYS_BUCKET, history=1)
        ring = KeyRing(js)
        await ring.start()
        reads = _count_reads(js)
        settings = Settings()
        edge = Edge(settings)
        edge.keys = ring
        try:
            guess = new_api_key()
            answers = await asyncio.gather(
                *(edge.authenticate(guess, _peer("10.0.0.2")) for _ in range(3)),
                return_exceptions=True,
            )
            assert [getattr(a, "code", a) for a in answers] == ["invalid_api_key"] * 3
            assert len(reads) == 1  # three at once: one read
            with pytest.raises(AuthenticationFailed):
                await edge.authenticate(guess, _peer("10.0.0.2"))
            assert len(reads) == 1  # remembered as absent for a second
            with pytest.raises(AuthenticationFailed):  # not our shape: never read
                await edge.authenticate("sk-proj-" + "x" * 40, _peer("10.0.0.2"))
            assert len(reads) == 1

            # Unknown keys still count towards the address's limit, and past it no read is made.
            limit = settings.ingress.failed_auth_limit
            for _ in range(limit):
                with contextlib.suppress(AuthenticationFailed):
                    await edge.authenticate(new_api_key(), _peer("10.0.0.3"))
            before = len(reads)
            with pytest.raises(RateLimited):
                await edge.authenticate(new_api_key(), _peer("10.0.0.3"))
            assert len(reads) == before

            # A revoked or missing key from that address still reads why (an explorer got the
            # retryable 429 for a revoked key), and a valid key still passes.
            admin = KeyAdmin(js)
            revoked_key, revoked = await admin.create("revoked-behind-a-busy-address")
            valid_key, valid = await admin.create("valid-behind-a-busy-address")
            await admin.revoke(revoked.id)
            await until(lambda: getattr(ring._by_hash.get(revoked.hash), "disabled", False))
            with pytest.raises(AuthenticationFailed) as why:
                await edge.authenticate(revoked_key, _peer("10.0.0.3"))
            assert why.value.code == "api_key_revoked"
            with pytest.raises(AuthenticationFailed) as missing:
                await edge.authenticate(None, _peer("10.0.0.3"))
            assert missing.value.code == "missing_api_key"
            assert (await edge.authenticate(valid_key, _peer("10.0.0.3"))).id == valid.id
        finally:
            await ring.stop()


async def test_an_edge_may_read_a_key_from_the_leader_on_the_zoned_stack(stack: Stack) -> None:
    """The read goes to the stream leader's API (not a direct get a lagging replica may
    answer); the edges' CLIENT-zone identity is allowed it."""
    tail = await stack.connect("tail")
    try:
        ring = KeyRing(tail.jetstream(timeout=5))  # not following: every key is unknown to it
        api_key, record = await stack.new_key("lookup-zoned")
        assert await ring.look_up(api_key)
        assert ring.authenticate(api_key).id == record.id
        assert not await ring.look_up(new_api_key())
    finally:
        await tail.close()


async def test_without_an_answer_from_the_leader_a_replica_is_asked(tmp_path: Path) -> None:
    """During a stream leader election the leader's API does not answer; a direct get (any
    replica) does, and only when both fail is the answer 503 ``keys_unavailable``."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.create_key_value(bucket=subjects.KEYS_BUCKET, history=1, direct=True)
        ring = KeyRing(js)
        real = js.get_msg
        failing = {"leader"}

        async def no_leader(*args: Any, **kwargs: Any) -> Any:
            if ("direct" if kwargs.get("direct") else "leader") in failing:
                raise TimeoutError
            return await real(*args, **kwargs)

        js.get_msg = no_leader  # type: ignore[method-assign]  # the server answers the rest
        api_key, record = await KeyAdmin(js).create("no-leader")
        assert await ring.look_up(api_key)
        assert ring.authenticate(api_key).id == record.id
        assert not await ring.look_up(new_api_key())  # absent by the replica's answer
        failing.add("direct")
        with pytest.raises(ServiceUnavailable) as unavailable:
            await ring.look_up(new_api_key())
        assert unavailable.value.code == "keys_unavailable"


async def test_reads_per_second_are_capped(tmp_path: Path) -> None:
    """Unknown keys from many addresses each stay under the per-address guard; the reads they
    cause together are capped per edge (a reviewer's find: only reads in flight were)."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.create_key_value(bucket=subjects.KEYS_BUCKET, history=1)
        ring = KeyRing(js, lookups_per_s=3)
        reads = _count_reads(js)
        for _ in range(6):
            assert not await ring.look_up(new_api_key())
        assert len(reads) == 3
        await asyncio.sleep(0.4)  # a second's allowance comes back over the second
        assert not await ring.look_up(new_api_key())
        assert len(reads) == 4


async def test_a_replica_behind_a_deletion_cannot_bring_the_key_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted key's revision is forgotten after a while (keys come and go); a read answered
    later by a replica still behind the deletion (during a leader election) returns the old
    record. The watch saw that revision and the deletion after it, so the edge refuses it."""
    monkeypatch.setattr(keyring, "FORGET_DELETED_S", 0.1)
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.create_key_value(bucket=subjects.KEYS_BUCKET, history=1, direct=True)
        admin = KeyAdmin(js)
        api_key, record = await admin.create("gone")
        _, other = await admin.create("also-gone")
        ring = KeyRing(js)
        await ring.start()
        try:
            await until(lambda: len(ring) == 2, 5)
            real = js.get_msg
            stale = await real(
                f"KV_{subjects.KEYS_BUCKET}",
                subject=f"$KV.{subjects.KEYS_BUCKET}.{record_name(hash_key(api_key))}",
            )
            await admin.delete(record.id)
            await asyncio.sleep(0.2)
            await admin.delete(other.id)  # the next deletion forgets the first one's revision
            await until(lambda: len(ring) == 0, 5)

            async def behind(*args: Any, **kwargs: Any) -> Any:
                if not kwargs.get("direct"):
                    raise TimeoutError  # the leader does not answer: a replica is asked
                return stale  # and it has not seen the deletion

            js.get_msg = behind  # type: ignore[method-assign]
            assert not await ring.look_up(api_key)
            with pytest.raises(AuthenticationFailed):
                ring.authenticate(api_key)
        finally:
            await ring.stop()
