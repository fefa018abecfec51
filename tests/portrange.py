"""The ports this test process picks from: a slice of its own per pytest-xdist worker.

Every stack a test starts picks listening ports at random and binds them a moment later (a
``switchyard up`` child binds its last health port seconds after the plan). Two test
processes picking from one shared range can choose the same port in that moment: CI lost a
run to ``address already in use`` that way. Disjoint slices make it impossible.
"""

from __future__ import annotations

import os

from switchyard.stack.ports import default_range


def worker_range(env: dict[str, str] | None = None) -> tuple[int, int]:
    """First and last port for this process: the whole default range without xdist."""
    env = dict(os.environ) if env is None else env
    low, high = default_range()
    worker = env.get("PYTEST_XDIST_WORKER", "")
    count = int(env.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index = int(worker[2:]) % count
    size = (high - low + 1) // count
    first = low + index * size
    return first, first + size - 1
