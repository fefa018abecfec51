"""Runs a batch's recorded results through :class:`formats.Assembly` as the runner does."""

from __future__ import annotations

from collections.abc import Iterable

from switchyard.schemas import batches as b
from switchyard.workers.batch import formats


def assemble(
    fmt: formats.Format,
    lines: list[b.BatchLine],
    results: dict[int, bytes] | Iterable[tuple[int, bytes]],
    final: str,
    batch_id: str = "msgbatch_x",
) -> tuple[list[bytes], list[bytes], tuple[int, int]]:
    """(output rows, error rows, (completed, failed)); ``results`` in the order recorded."""
    done = formats.Assembly(fmt, batch_id, len(lines), final)
    files: dict[bool, list[bytes]] = {False: [], True: []}
    pairs = results.items() if isinstance(results, dict) else results
    for index, result in pairs:
        placed = done.result(index, result)
        if placed is not None:
            files[placed[0]].append(placed[1])
    for index, line in enumerate(lines, start=1):
        unrun = done.unrun(index, line)
        if unrun is not None:
            files[unrun[0]].append(unrun[1])
    return files[False], files[True], (done.completed, done.failed)
