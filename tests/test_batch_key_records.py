"""The batch runner's reads of client key records (their budgets), on a real nats-server:
one record by name, a gone key as None, and a memory of them that stays bounded however many
keys' batches ran."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from switchyard.bus import subjects
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
