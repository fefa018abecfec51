"""Probes against a real nats-server: a model-proxy's probe round reads the answers already sent
before judging (:func:`switchyard.workers.modelproxy.probes._collect`)."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from switchyard.workers.modelproxy import probes
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


async def test_answers_already_sent_at_the_deadline_are_not_taken_for_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answers are on their way when the wait ends (here it is zero: a process too busy to
    read its socket in time): they are read after one flush, not counted as misses."""
    monkeypatch.setattr(probes, "PROBE_WAIT_S", 0.0)
    async with jetstream_server(tmp_path) as (nc, _):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(f"{inbox}.*")
        await nc.flush()
        caller = await nats.connect(nc.connected_url.geturl())  # type: ignore[union-attr]
        try:
            await caller.publish(f"{inbox}.0", b"")
            await caller.publish(f"{inbox}.1", b"")
            await caller.flush()  # the server has them (on their way to ``nc``)
        finally:
            await caller.close()
        heard: dict[str, bool] = {}
        await probes._collect(nc, sub, heard, 2)
    assert heard == {f"{inbox}.0": True, f"{inbox}.1": True}
