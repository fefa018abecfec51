"""``switchyard_limiter_duration_seconds`` while Valkey hangs (a real valkey-server, SIGSTOPped).

An explorer froze Valkey and the dashboard's limiter latency panel went blank: the histogram
was observed only after an answer, and every call that waited out ``redis.timeout_s`` returned
before it. Failed calls are timed now, under ``outcome="unavailable"``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from switchyard.config import Settings
from switchyard.errors import ServiceUnavailable
from switchyard.limits.limiter import Limiter
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.keys import ClientKey, new_key_id
from tests.support import pause, valkey_server, write_settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def valkey(tmp_path: Path) -> AsyncIterator[tuple[Settings, int]]:
    settings, _ = write_settings(tmp_path / "home")
    async with valkey_server(settings) as server:
        yield settings, server.pid


def _timings(metrics: Metrics) -> dict[str, tuple[float, float]]:
    """outcome -> (count, sum) of the limiter's histogram in a scrape."""
    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name != sc.LIMITER_DURATION:
            continue
        for sample in family.samples:
            outcome = sample.labels.get(sc.OUTCOME, "")
            count, total = out.get(outcome, (0.0, 0.0))
            if sample.name.endswith("_count"):
                out[outcome] = (sample.value, total)
            elif sample.name.endswith("_sum"):
                out[outcome] = (count, sample.value)
    return out


@pytest.mark.timeout(60)
async def test_calls_that_time_out_on_a_hung_valkey_are_timed(
    valkey: tuple[Settings, int],
) -> None:
    settings, pid = valkey
    metrics = Metrics("gateway")
    limiter = Limiter(settings, metrics)
    key = ClientKey(id=new_key_id(), hash="0" * 64, name="timed", rpm=1000)
    try:
        assert await limiter.admit(key, "r1", 1) is not None
        assert {o: c for o, (c, _) in _timings(metrics).items()} == {"ok": 1}
        await pause(pid)
        try:
            for n in (2, 3):
                with pytest.raises(ServiceUnavailable) as refused:
                    await limiter.admit(key, f"r{n}", 1)
                assert refused.value.code == "limits_unavailable"
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        await limiter.close()
    timed = _timings(metrics)
    assert timed["ok"][0] == 1
    count, total = timed["unavailable"]
    assert count == 2
    # The first waited out the per-call timeout (the next fails fast on the broken
    # connection): the panel shows the hang, not nothing.
    assert total >= settings.redis.timeout_s * 0.9
