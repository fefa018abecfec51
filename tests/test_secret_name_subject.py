"""A provider key name no secret can have is never sent as a NATS subject.

A route table stored before names were checked whole may hold a provider with ``secret:
"key\\n"``; it still loads. The model-proxy fetched it as ``secrets.v1.get.key\\n``. A review
feared nats-server would close the model-proxy's connection over the broken PUB line; nats-py
2.16 (the oldest the project takes) refuses the subject itself, so the request failed with an
unclassified ``BadSubjectError`` (an internal error, not a reroute) and the connection must
stay up whatever the client library does. Now such a name answers like a key not stored (503
``secret_unavailable``), logged once, and nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from switchyard.errors import SecretMissing
from switchyard.runtime.secret_cache import SecretCache
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


async def test_a_name_ending_in_a_line_break_keeps_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        disconnects: list[int] = []

        async def disconnected() -> None:
            disconnects.append(1)

        nc._disconnected_cb = disconnected
        cache = SecretCache(nc, ttl=60.0, request_timeout=1.0)
        await cache.start()
        try:
            with caplog.at_level(logging.ERROR, logger="switchyard.bus.secret_cache"):
                cache.prefetch({"key\n"})  # as a model-proxy starts
                await asyncio.sleep(0.3)
                for _ in range(2):
                    with pytest.raises(SecretMissing) as refused:
                        await cache.get("key\n")
                    assert refused.value.code == "secret_unavailable"
                    assert "\n" not in refused.value.message
                await nc.flush(timeout=2)
            assert nc.is_connected
            assert disconnects == []
            assert nc.stats["reconnects"] == 0
            logged = [r for r in caplog.records if "not a secret name" in r.getMessage()]
            assert len(logged) == 1  # once, however often asked
            assert "\n" not in logged[0].getMessage()
        finally:
            await cache.stop()
