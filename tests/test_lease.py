"""The feeder lease on a real JetStream KV bucket: one holder at a time, taken over only after
it expired, kept through a short outage while a margin is left.

Times are passed in (``now=``) so expiry is exact; the compare-and-set and the outage are real:
the bucket lives on a nats-server of its own, and the outage is that server paused (SIGSTOP),
so every renewal in it times out the way one does while a node fails over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchyard.runtime.lease import RELEASE_TIMEOUT_S, Lease
from switchyard.schemas.scheduling import FEEDER_LEASE_KEY as KEY
from tests.support import jetstream_server, pause

pytestmark = pytest.mark.integration


@dataclass
class Bucket:
    kv: KeyValue
    js: JetStreamContext  # a patient handle, to see the server answer again
    server: asyncio.subprocess.Process

    @contextlib.asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        """The bucket unreachable: its server paused, every request times out."""
        await pause(self.server.pid)
        try:
            yield
        finally:
            self.server.send_signal(signal.SIGCONT)
            await self.js.account_info()  # answering again before the test goes on


@pytest_asyncio.fixture(loop_scope="session")
async def bucket(tmp_path: Path) -> AsyncIterator[Bucket]:
    async with jetstream_server(tmp_path) as (nc, server):
        # A short API timeout: a renewal during the outage fails in 1 s, not 5.
        kv = await nc.jetstream(timeout=1.0).create_key_value(bucket="sy_sched_test")
        yield Bucket(kv, nc.jetstream(timeout=30), server)


async def test_one_holder_until_it_stops_renewing(bucket: Bucket) -> None:
    a = Lease(bucket.kv, KEY, "a", ttl=6)
    b = Lease(bucket.kv, KEY, "b", ttl=6)
    assert await a.renew(now=100.0)
    assert not await b.renew(now=101.0)
    assert await a.renew(now=103.0)  # renewed: valid until 109
    assert not await b.renew(now=108.0)
    assert await b.renew(now=110.0)  # a went quiet: b takes over
    assert not await a.renew(now=111.0)
    assert b'"owner":"b"' in ((await bucket.kv.get(KEY)).value or b"")


async def test_two_replicas_racing_for_a_free_lease_give_one_holder(bucket: Bucket) -> None:
    leases = [Lease(bucket.kv, KEY, f"r{i}", ttl=6) for i in range(5)]
    won = await asyncio.gather(*(lease.renew(now=100.0) for lease in leases))
    assert sum(won) == 1, won  # create and update are compare-and-set on the server


async def test_a_clean_stop_hands_the_lease_over_at_once(bucket: Bucket) -> None:
    a = Lease(bucket.kv, KEY, "a", ttl=6)
    b = Lease(bucket.kv, KEY, "b", ttl=6)
    assert await a.renew(now=100.0)
    await b.release()  # not b's to give: nothing changes
    assert not await b.renew(now=101.0)
    await a.release()
    assert await b.renew(now=101.0)


async def test_a_release_during_an_outage_gives_up_in_seconds(bucket: Bucket) -> None:
    """Every process stopping at once (the supervisor killed) stops its NATS server too: the
    release, which control's 10 s API timeout would stretch to 20 s, gives up, and the lease
    expires by itself."""
    patient = await bucket.js.key_value("sy_sched_test")  # 30 s API timeout
    a = Lease(patient, KEY, "a", ttl=6)
    assert await a.renew(now=100.0)
    async with bucket.down():
        began = time.monotonic()
        await a.release()
        took = time.monotonic() - began
    assert RELEASE_TIMEOUT_S - 0.5 < took < RELEASE_TIMEOUT_S + 2
    assert not await Lease(bucket.kv, KEY, "b", ttl=6).renew(now=101.0)  # still a's, until 106


async def test_a_missed_renewal_keeps_the_lease_while_a_margin_is_left(bucket: Bucket) -> None:
    a = Lease(bucket.kv, KEY, "a", ttl=6)
    b = Lease(bucket.kv, KEY, "b", ttl=6)
    assert await a.renew(now=100.0)  # valid until 106
    async with bucket.down():
        assert await a.renew(now=102.0)  # unreachable, but 4 s of its lease are left
        assert not await a.renew(now=104.0)  # 2 s left: stop feeding before b may take it
    assert not await b.renew(now=105.9)
    assert await b.renew(now=106.1)
    assert not await a.renew(now=106.2)
    async with bucket.down():
        assert not await a.renew(now=106.3)  # it lost the lease: an outage gives nothing back


async def test_never_holding_means_an_outage_grants_nothing(bucket: Bucket) -> None:
    async with bucket.down():
        assert not await Lease(bucket.kv, KEY, "a", ttl=6).renew(now=100.0)


async def test_a_takeover_by_a_clock_running_ahead_is_seen_by_the_old_holder(
    bucket: Bucket,
) -> None:
    """Expiry is judged by each replica's clock: a replica whose clock runs ahead may take the
    lease while the holder still thinks it valid. The holder reads before it writes, so it
    learns at its next renewal; a key removed by hand is simply created again."""
    a = Lease(bucket.kv, KEY, "a", ttl=6)
    b = Lease(bucket.kv, KEY, "b", ttl=6)
    assert await a.renew(now=100.0)  # valid until 106 by a's clock
    assert await b.renew(now=107.0)  # b's clock is ahead: for b, a's lease has expired
    assert not await a.renew(now=105.0)  # a still thinks it holds it: its read tells it not
    assert b'"owner":"b"' in ((await bucket.kv.get(KEY)).value or b"")
    await bucket.kv.delete(KEY)  # an operator removed it
    assert await b.renew(now=109.0)  # b, which held it, creates it again
    assert b'"owner":"b"' in ((await bucket.kv.get(KEY)).value or b"")


async def test_a_clock_ahead_is_told_only_past_the_tolerance(
    bucket: Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    """Hosts a few milliseconds apart (any two NTP-synced hosts) are no cause for a warning:
    only an expiry more than a third of the lease (the tolerance the docs give, 2 s of 6 s)
    beyond one written now is, and once."""
    caplog.set_level(logging.WARNING, logger="switchyard.lease")
    a = Lease(bucket.kv, KEY, "a", ttl=6)
    b = Lease(bucket.kv, KEY, "b", ttl=6)

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records if "clocks agree" in r.getMessage()]

    assert await a.renew(now=100.0)  # until 106
    assert not await b.renew(now=99.995)  # b's clock 5 ms behind a's
    assert not await b.renew(now=98.5)  # 1.5 s behind: within the tolerance
    assert told() == []
    assert not await b.renew(now=97.9)  # 2.1 s behind: a's clock is ahead
    assert not await b.renew(now=97.0)
    assert len(told()) == 1, told()
