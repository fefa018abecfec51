"""What finishing a large batch costs the batch runner in memory
(``python -m bench.batch_finish``).

For each size it starts a plain nats-server with JetStream, records every line's answer as
the runner does, then writes the batch's output file two ways, each in a fresh process:
as the runner does now (answers read a page at a time, the file written chunk by chunk) and
as it did before (every answer read, the file joined whole, then stored). It reports the
peak resident memory above what the process held when finishing began (Linux: the
``VmHWM`` high-water mark, reset first), and the CPU that finishing took. Writes
``bench/results/batch_finish.md``. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from nats.js import JetStreamContext

from bench.plainjs import connect, jetstream_server, write_results
from switchyard.bus import subjects
from switchyard.runtime.batchstore import BatchStore
from switchyard.schemas import batches as b
from switchyard.workers.batch import formats
from switchyard.workers.batch.output import OutputFiles

RESULTS = Path(__file__).parent / "results" / "batch_finish.md"
SIZES = ((50_000, 1_200), (20_000, 12_000))  # (lines, characters per answer)
ENDPOINT = "/v1/chat/completions"


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status (Linux only)")


def _input(lines: int) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 1800}]}
    rows = (
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": ENDPOINT, "body": body})
        for i in range(lines)
    )
    return "\n".join(rows).encode()


def _reset_peak() -> float:
    """Start the high-water mark afresh; returns the resident memory now, in MB."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


async def _record(store: BatchStore, lines: list[b.BatchLine], answer: int) -> None:
    """Every line's answer recorded, as the runner records them."""
    body = json.dumps({"id": "c", "choices": [{"message": {"content": "y" * answer}}]}).encode()
    count, fmt = len(lines), formats.OPENAI
    for start in range(1, count + 1, 500):
        rows = range(start, min(count, start + 499) + 1)
        await asyncio.gather(
            *(
                store.record_line("batch_x", i, fmt.line("batch_x", i, lines[i - 1], 200, body))
                for i in rows
            )
        )


async def _finish_now(store: BatchStore, lines: list[b.BatchLine]) -> None:
    batch = b.Batch(
        id="batch_x",
        endpoint=ENDPOINT,
        input_file_id="file-in",
        completion_window="24h",
        status="in_progress",
        created_at=int(time.time()),
    )
    record = b.BatchRecord(batch=batch, owner="o", key_id="k", key_hash="h")
    done = formats.Assembly(formats.OPENAI, "batch_x", len(lines), "completed")
    files = OutputFiles(store, record, formats.OPENAI, 0)
    async for index, result in store.line_results("batch_x"):
        placed = done.result(index, result)
        if placed is not None:
            await files.add(*placed)
    assert done.every_line_answered  # so the input is not read again
    await files.close()


async def _finish_before(js: JetStreamContext) -> None:
    """Every answer in a dict, sorted, joined, stored in one piece (as before)."""
    results = {index: result async for index, result in _every(js)}
    good = [results[i] for i in sorted(results) if formats.OPENAI.ok(results[i])]
    data = b"".join(row + b"\n" for row in good)
    await (await js.object_store(subjects.FILES_BUCKET)).put("file-batch_x-output", data)


async def _case(port: int, how: str, count: int, answer: int) -> str:
    nc = await connect(port)
    try:
        js = nc.jetstream(timeout=60)
        await js.create_key_value(bucket=subjects.BATCH_LINES_BUCKET)
        await js.create_key_value(bucket=subjects.BATCHES_BUCKET)
        files = await js.create_object_store(subjects.FILES_BUCKET)
        store = BatchStore(nc)
        # Parsed and held as the runner did before it read its input from the store.
        lines = [b.BATCH_LINE.decode(raw) for raw in _input(count).splitlines()]
        await _record(store, lines, answer)
        began, cpu = _reset_peak(), time.process_time()
        await (_finish_now(store, lines) if how == "now" else _finish_before(js))
        spent = time.process_time() - cpu
        peak = _status("VmHWM") - began
        size = (await files.get_info("file-batch_x-output")).size or 0
        doc = {"start_mb": began, "peak_mb": peak, "cpu_s": spent, "output_mb": size / 1e6}
        return json.dumps(doc)
    finally:
        await nc.close()


async def _every(js: JetStreamContext) -> AsyncIterator[tuple[int, bytes]]:
    """Every answer read with a KV watch, as the runner read them before."""
    kv = await js.key_value(subjects.BATCH_LINES_BUCKET)
    watcher = await kv.watch("batch_x.>")
    async for entry in watcher:
        if entry is None:
            break
        if entry.value:
            yield int(entry.key.rsplit(".", 1)[1]), entry.value
        if entry.delta == 0:
            break
    await watcher.stop()  # type: ignore[no-untyped-call]


def _run_case(how: str, count: int, answer: int) -> dict[str, float]:
    with jetstream_server() as port:
        case = ["--case", how, str(port), str(count), str(answer)]
        out = subprocess.run(
            [sys.executable, "-m", "bench.batch_finish", *case],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs=4, metavar=("HOW", "PORT", "LINES", "ANSWER"))
    args = parser.parse_args()
    if args.case:
        how, port, count, answer = args.case
        print(asyncio.run(_case(int(port), how, int(count), int(answer))))
        return
    lines = [
        "| Lines | answer chars | output MB | written | RSS at start MB | peak above MB | CPU s |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for count, answer in SIZES:
        for how, name in (("now", "chunk by chunk (now)"), ("before", "whole (before)")):
            r = _run_case(how, count, answer)
            lines.append(
                f"| {count:,} | {answer:,} | {r['output_mb']:.1f} | {name} | {r['start_mb']:.0f} | "
                f"{r['peak_mb']:.0f} | {r['cpu_s']:.2f} |"
            )
            print(lines[-1], flush=True)
    write_results(
        RESULTS,
        "Finishing a large batch: the runner's memory",
        "`python -m bench.batch_finish` (a plain nats-server on this machine; each row in a"
        " fresh process, which holds the batch's parsed input lines as the runner did until"
        " it read its input from the store as it goes)."
        " RSS at start includes memory the process freed before (the input file's bytes,"
        " parsed and dropped, as in the runner): 0 above it means finishing fit in what"
        " the process already held.",
        lines,
    )


if __name__ == "__main__":
    main()
