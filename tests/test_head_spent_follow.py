"""A head whose NATS has no ``sy_key_spent`` bucket yet (an upgrade before ``switchyard
provision``) serves, and holds keys to their budgets once the bucket is there.

The head's key view (:class:`KeyPolicies`, whose start is the head's) follows the spent marks;
a follow that cannot start used to raise from the head's start, so every head crash-looped
until the bucket was provisioned and the NATS config rendered again. A plain nats-server with
JetStream: the bucket is made, and a mark written, by the test.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.bus import subjects
from switchyard.errors import RateLimited
from switchyard.limits import keys as rk
from switchyard.limits import periods, spent_marks
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.keys import ClientKey
from switchyard.workers.head.keys import KeyPolicies
from switchyard.workers.head.spent_keys import SpentKeys
from tests.support import jetstream_server, until

pytestmark = pytest.mark.integration

KEY = ClientKey(id="key_0123456789abcdef", hash="h", name="n", budget_usd=1.0)


def _refused(spent: SpentKeys) -> bool:
    try:
        spent.check(KEY)
    except RateLimited:
        return True
    return False


def _held(metrics: Metrics, name: str = sc.HEAD_SPENT_KEYS) -> float:
    values = [
        s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == name
    ]
    assert len(values) == 1, values
    return values[0]


async def test_a_head_without_the_bucket_serves_and_follows_it_once_made(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream(timeout=2)
        metrics = Metrics("head")
        spent = SpentKeys(js, metrics, retry_s=0.2)
        view = KeyPolicies(nc, spent=spent)
        await view.start()  # no bucket: serves on (raised NotFoundError before)
        try:
            following_at_start = spent.following
            assert not following_at_start
            view.check_budget(KEY)  # nothing refused while nothing is followed
            assert _held(metrics) == 0
            assert _held(metrics, sc.HEAD_SPENT_FOLLOWING) == 0  # tells this 0 from "none"

            kv = await js.create_key_value(bucket=subjects.KEY_SPENT_BUCKET)
            period_id, end = periods.current(KEY.budget_period, time.time())
            mark = spent_marks.mark_of(KEY, int(1.0 * rk.NANO), period_id, end)
            assert mark is not None
            mark = msgspec.structs.replace(mark, written_at=time.time())  # as the writer does
            await kv.put(spent_marks.entry_name(KEY.id), spent_marks.encode(mark))
            await until(lambda: _refused(spent), timeout=10)
            # The follow's start delivers the marks before it returns: a moment after them.
            await until(lambda: spent.following, timeout=10)
            with pytest.raises(RateLimited):
                view.check_budget(KEY)
            assert _held(metrics) == 1  # the gauge of marks held
            assert _held(metrics, sc.HEAD_SPENT_FOLLOWING) == 1
            # A stale mark (nobody rewrote it: its gateway stopped) is held, not counted.
            other = ClientKey(id="key_fedcba9876543210", hash="h2", name="n2", budget_usd=1.0)
            stale = msgspec.structs.replace(
                mark, key_id=other.id, written_at=time.time() - spent_marks.STALE_S - 60
            )
            await kv.put(spent_marks.entry_name(other.id), spent_marks.encode(stale))
            await until(lambda: other.id in spent._marks, timeout=10)
            assert _held(metrics) == 1

            await kv.delete(spent_marks.entry_name(KEY.id))
            await until(lambda: not _refused(spent), timeout=10)
            assert _held(metrics) == 0
        finally:
            await view.stop()
            await view.stop()  # idempotent


async def test_a_head_whose_read_of_the_bucket_times_out_serves(tmp_path: Path) -> None:
    """The older NATS config: the head may not ask about the bucket, so its question goes
    unanswered (the JetStream API asked under a prefix only a subscriber that never answers
    listens on stands in for the dropped request)."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        silent = await nc.subscribe("$SILENT.API.>")
        spent = SpentKeys(nc.jetstream(prefix="$SILENT.API", timeout=0.5), retry_s=60)
        began = time.monotonic()
        await spent.start()  # raised TimeoutError before
        try:
            assert time.monotonic() - began < 5
            assert not spent.following
            spent.check(KEY)
        finally:
            await spent.stop()
            await silent.unsubscribe()
