"""A head's kept key record does not outlive a change it never heard, on the session stack.

The head hears key changes as plain NATS messages (the CLIENT account's change stream): one
published while the head reconnects (a NATS node loss) never reaches it, and the record it kept
served on forever, so a revoked key's internal client (NATS requests, which no edge checks)
kept working until the head restarted. A lost change is made here by hearing none while the key
is revoked; the head's view reads a key in use again once its record is ``revalidate_s`` old.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import identities, subjects
from switchyard.bus.envelope import Envelope
from switchyard.errors import AuthenticationFailed
from switchyard.schemas.keys import hash_key, new_api_key
from switchyard.workers.head.callers import authorize, stamp
from switchyard.workers.head.keys import KeyPolicies
from tests.stacks import Stack
from tests.support import jetstream_server, until

pytestmark = pytest.mark.integration


async def _until(check: Any, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (value := await check()):
        assert loop.time() < end, "not seen in time"
        await asyncio.sleep(0.1)
    return value


class _Replica:
    """Answers the head's direct gets on a plain nats-server as the zoned stack's import does
    (the same subject, remapped to the stream's own API), except that it says "no such key"
    while ``lagging`` says so: a replica behind the write."""

    def __init__(self, nc: Any, lagging: Callable[[int], bool]) -> None:
        self.nc = nc
        self.lagging = lagging  # (asks so far) -> answer 404 to this one
        self.asked: list[str] = []

    async def answer(self, msg: Msg) -> None:
        self.asked.append(msg.subject)
        if self.lagging(len(self.asked)):
            await self.nc.publish(msg.reply, b"", headers={"Status": "404"})
            return
        real = msg.subject.replace(
            subjects.KEYS_DIRECT_GET_PREFIX, f"$JS.API.DIRECT.GET.KV_{subjects.KEYS_BUCKET}"
        )
        answer = await self.nc.request(real, b"", timeout=2)
        await self.nc.publish(msg.reply, answer.data, headers=answer.headers)


async def test_a_revocation_the_head_did_not_hear_reaches_it(stack: Stack) -> None:
    head = await stack.connect("head")
    admin = await stack.connect("admin")
    view = KeyPolicies(head, revalidate_s=1.0)
    await view.start()
    try:
        keys = KeyAdmin(admin.jetstream(timeout=10))
        _, record = await keys.create("head-view")
        kept = await view.get(record.hash)
        assert kept is not None
        assert not kept.disabled

        assert view._sub is not None
        await view._sub.unsubscribe()  # the head hears no change: its reconnect
        view._sub = None
        await keys.revoke(record.id)
        await asyncio.sleep(0.3)
        assert (await view.get(record.hash)) == kept  # read less than 1 s ago: kept

        async def revoked() -> bool:
            current = await view.get(record.hash)
            return current is not None and current.disabled

        await _until(revoked)

        await keys.delete(record.id)  # a deletion it did not hear either

        async def gone() -> bool:
            return await view.get(record.hash) is None

        await _until(gone)
    finally:
        await view.stop()
        await head.close()
        await admin.close()


async def test_a_replica_behind_the_write_does_not_make_a_new_key_unknown(tmp_path: Path) -> None:
    """nats-server lets a follower answer direct gets once it is 90% caught up, so the head's
    first read of a key created a moment ago may be answered "no such key" (and the key was
    refused for 2 s). The head asks again twice before it believes that. Here the first
    answer comes from a responder standing in for such a replica on a plain nats-server; the
    others are the stream's own (the same subject remapping the zoned stack's import does)."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.create_key_value(bucket=subjects.KEYS_BUCKET, history=1, direct=True)
        replica = _Replica(nc, lambda n: n == 1)
        asked = replica.asked
        await nc.subscribe(f"{subjects.KEYS_DIRECT_GET_PREFIX}.>", cb=replica.answer)
        _, record = await KeyAdmin(js).create("lagging-replica")  # before the head listens
        view = KeyPolicies(nc)
        await view.start()
        try:
            found = await view.get(record.hash)
            assert found is not None
            assert found.id == record.id
            assert len(asked) == 2
            assert await view.get(hash_key(new_api_key())) is None  # unknown: asked thrice
            assert len(asked) == 5
        finally:
            await view.stop()


async def test_a_re_read_answered_no_such_key_keeps_the_record(tmp_path: Path) -> None:
    """A kept record is read again every ``revalidate_s``; a replica behind the write (the
    one a recovering node has) may answer "no such key" even for a key that long exists. The
    re-read keeps the record then (it was dropped, and the key refused, before)."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        await js.create_key_value(bucket=subjects.KEYS_BUCKET, history=1, direct=True)
        lagging = {"on": False}
        replica = _Replica(nc, lambda _n: lagging["on"])
        asked = replica.asked
        await nc.subscribe(f"{subjects.KEYS_DIRECT_GET_PREFIX}.>", cb=replica.answer)
        _, record = await KeyAdmin(js).create("kept-through-a-lagging-replica")
        view = KeyPolicies(nc, revalidate_s=0.2)
        await view.start()
        try:
            assert (await view.get(record.hash)) is not None
            lagging["on"] = True
            before = len(asked)
            await asyncio.sleep(0.3)
            assert (await view.get(record.hash)) is not None  # starts the re-read
            await until(lambda: len(asked) >= before + 3 and not view._pending)
            kept = await view.get(record.hash)
            assert kept is not None
            assert kept.id == record.id
        finally:
            await view.stop()


async def test_a_head_takes_an_old_secret_as_the_key_until_its_grace_ends(stack: Stack) -> None:
    """Internal clients present the secret to a head (no edge checks it): during a rotated
    key's grace the old secret is the key as it is now, after it the secret is refused; a
    batch runner's lines (named by the hash of the secret that made the batch) run on. The
    old secret's hash is named beside the key (``Sy-Presented-Hash``: a cancel proved with it
    counts) during the grace only: a batch made before the rotation used to keep it for its
    whole life, so the old secret cancelled its lines long after it stopped working."""
    head = await stack.connect("head")
    admin = await stack.connect("admin")
    view = KeyPolicies(head)
    await view.start()
    try:
        keys = KeyAdmin(admin.jetstream(timeout=10))
        old, record = await keys.create("head-rotated")
        new, current = await keys.rotate(record.id, 2)
        await keys.update(record.id, rpm=7)
        internal = Envelope(request_id="r1", authorization=f"Bearer {old}")
        batch = Envelope(request_id="r2", key_hash=hash_key(old))

        async def seen_rpm() -> bool:
            key, _, _ = await authorize(view, internal, "some-internal-client")
            return key.rpm == 7

        async def stamped(env: Envelope, caller: str) -> Envelope:
            key, _, presented = await authorize(view, env, caller)
            return stamp(env, key, caller, presented)

        await _until(seen_rpm)
        key, _, _ = await authorize(view, internal, "some-internal-client")
        assert (key.id, key.hash) == (record.id, current.hash)
        for env, caller in ((internal, "some-internal-client"), (batch, identities.BATCH.name)):
            assert (await stamped(env, caller)).presented_hash == hash_key(old)  # its grace
        current_env = Envelope(request_id="r3", authorization=f"Bearer {new}")
        assert (await stamped(current_env, "some-internal-client")).presented_hash == ""
        await asyncio.sleep(2.1)
        with pytest.raises(AuthenticationFailed, match="rotated"):
            await authorize(view, internal, "some-internal-client")
        key, _, _ = await authorize(view, batch, identities.BATCH.name)
        assert (key.id, key.hash) == (record.id, hash_key(new))
        ran_on = await stamped(batch, identities.BATCH.name)
        assert (ran_on.key_hash, ran_on.presented_hash) == (hash_key(new), "")  # grace over
        await keys.delete(record.id)
    finally:
        await view.stop()
        await head.close()
        await admin.close()
