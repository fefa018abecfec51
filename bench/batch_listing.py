"""What one tenant's Batch API list costs the edge as the bucket fills
(``python -m bench.batch_listing``).

Starts a plain nats-server with JetStream, stores ``--records`` batches and as many files
spread over ``--owners`` tenants, then times one tenant's ``GET /v1/batches`` and
``GET /v1/files`` reads as the edges do them (owner keys: that tenant's records only) and as
they did before owner keys (every record of the bucket read, then filtered), wall time and
the process's CPU. Writes ``bench/results/batch_listing.md``. Not a test: numbers depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from bench.plainjs import connect, jetstream_server, write_results
from switchyard.bus import subjects
from switchyard.runtime.batchstore import BatchStore
from switchyard.schemas import batches as b

RESULTS = Path(__file__).parent / "results" / "batch_listing.md"
RUNS = 9


def _records(i: int, owner: str) -> tuple[b.BatchRecord, b.FileRecord]:
    created = 1_700_000_000 + i
    batch = b.Batch(
        id=f"batch_{i:07d}",
        endpoint="/v1/chat/completions",
        input_file_id=f"file-{i:07d}",
        completion_window="24h",
        status="completed",
        created_at=created,
        completed_at=created + 60,
        request_counts=b.RequestCounts(total=200, completed=200),
    )
    file = b.FileObject(
        id=f"file-{i:07d}", bytes=40_000, created_at=created, filename="in.jsonl", purpose="batch"
    )
    return (
        b.BatchRecord(batch=batch, owner=owner, key_id="key_bench", key_hash="0" * 64),
        b.FileRecord(file=file, owner=owner),
    )


async def _time(read: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    """Median wall and CPU milliseconds of ``RUNS`` reads, and how many records one returned."""
    walls, cpus, found = [], [], 0
    for _ in range(RUNS):
        cpu, wall = time.process_time(), time.perf_counter()
        found = await read()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus), found


async def _measure(port: int, records: int, owners: int) -> list[str]:
    nc = await connect(port)
    try:
        js = nc.jetstream(timeout=60)
        await js.create_key_value(bucket=subjects.BATCHES_BUCKET)
        await js.create_object_store(subjects.FILES_BUCKET)
        store = BatchStore(nc)
        kv = await js.key_value(subjects.BATCHES_BUCKET)
        gate = asyncio.Semaphore(128)

        async def put(i: int) -> None:
            batch, file = _records(i, f"team-{i % owners}")
            async with gate:
                await store.create(batch)
                key = b.owned_key(b.FILE_PREFIX, file.owner, file.file.id)
                await kv.put(key, b.ENCODER.encode(file))  # the record alone: no bytes needed

        began = time.perf_counter()
        await asyncio.gather(*(put(i) for i in range(records)))
        stored = time.perf_counter() - began
        me = "team-7"

        async def batches_now() -> int:
            return len(await store.records(me))

        async def files_now() -> int:
            return len(await store.files(me))

        async def every(prefix: str, decoder: msgspec.json.Decoder[Any]) -> int:
            """Every record of a kind read and decoded, then one owner's kept (as before)."""
            watcher = await kv.watch(prefix + ">")
            mine = 0
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value and decoder.decode(entry.value).owner == me:
                    mine += 1
                if entry.delta == 0:
                    break
            await watcher.stop()  # type: ignore[no-untyped-call]
            return mine

        async def batches_before() -> int:
            return await every(b.BATCH_PREFIX, b.BATCH_RECORD)

        async def files_before() -> int:
            return await every(b.FILE_PREFIX, b.FILE_RECORD)

        rows = [
            ("GET /v1/batches (owner keys)", batches_now),
            ("GET /v1/batches (every record, as before)", batches_before),
            ("GET /v1/files (owner keys)", files_now),
            ("GET /v1/files (every record, as before)", files_before),
        ]
        lines = [
            f"Stored {records:,} batches and {records:,} files for {owners} tenants "
            f"in {stored:.1f} s; one tenant has {records // owners} of each.",
            "",
            "| Read | wall ms (median of 9) | CPU ms | records returned |",
            "|---|---:|---:|---:|",
        ]
        for name, read in rows:
            wall, cpu, found = await _time(read)
            lines.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {found} |")
        return lines
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--owners", type=int, default=200)
    args = parser.parse_args()
    with jetstream_server() as port:
        lines = asyncio.run(_measure(port, args.records, args.owners))
    write_results(
        RESULTS,
        "Batch API lists: one tenant's records, not everyone's",
        f"`python -m bench.batch_listing --records {args.records} --owners {args.owners}`"
        " (a plain nats-server on this machine; the read runs in the benchmark's process,"
        " as it would in an edge's).",
        lines,
    )


if __name__ == "__main__":
    main()
