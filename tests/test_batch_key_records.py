"""The batch runner's reads of client key records (their budgets), on a real nats-server:
one record by name, a gone key as None, and a memory of them that stays bounded however many
keys' batches ran."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from switchyard.bus import subjects
from switchyard.errors import ServiceUnavailable
from switchyard.schemas.keys import KEY_ENCODER, ClientKey, record_name
from switchyard.workers.batch.budget import KeyRecords
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


async def test_records_are_read_by_name_and_kept_bounded(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream()
        bucket = subjects.KEYS_BUCKET
        await js.add_stream(
            StreamConfig(name=f"KV_{bucket}", subjects=[f"$KV.{bucket}.>"], allow_direct=True)
        )
        hashes = [f"{n:064x}" for n in range(6)]
        for n, digest in enumerate(hashes[:5]):
            key = ClientKey(id=f"key_{n}", hash=digest, name=f"k{n}", budget_usd=n + 1.0)
            await js.publish(f"$KV.{bucket}.{record_name(digest)}", KEY_ENCODER.encode(key))
        records = KeyRecords(nc, cache_s=0.0, max_known=3)
        try:
            for n, digest in enumerate(hashes[:5]):
                found = await records.get(digest)
                assert found is not None
                assert found.budget_usd == n + 1.0
                assert len(records) <= 3
            assert await records.get(hashes[5]) is None  # no such key (deleted)
        finally:
            await records.close()


async def test_records_that_cannot_be_read_make_lines_wait_and_say_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No key bucket to read (as with a runner missing its permission): every read is a 503
    the line waits on, and the runner's log says why once, not once per line."""
    async with jetstream_server(tmp_path) as (nc, _):
        records = KeyRecords(nc, cache_s=0.0)
        try:
            with caplog.at_level(logging.WARNING, logger="switchyard.batch"):
                for n in range(3):
                    with pytest.raises(ServiceUnavailable) as failed:
                        await records.get(f"{n:064x}")
                    assert failed.value.status == 503
        finally:
            await records.close()
    said = [r.getMessage() for r in caplog.records if r.name == "switchyard.batch"]
    assert len(said) == 1, said
    assert "batch lines wait" in said[0]
