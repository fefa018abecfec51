"""CPU time per request, attributed to each process of the stack.

We read ``utime + stime`` (and ``cutime + cstime``, for helpers a process started and reaped)
from ``/proc/<pid>/stat`` for every watched process and all its descendants, before and after a
measured run. The difference, divided by the requests wrk completed, is CPU per request. This
counts every cost a request causes, wherever it lands: Python workers, nats-server, the helpers.
Resolution is one clock tick (usually 10 ms), which over a 10 s run is well below 1 us/request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Watched:
    """A process to account for, and the group it is summed into."""

    name: str
    pid: int
    group: str


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, own + reaped children's CPU ticks), or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ppid, ticks


def _process_table() -> dict[int, tuple[int, int]]:
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                table[int(entry)] = info
    return table


def _tree_ticks(root: int, table: dict[int, tuple[int, int]], stop: set[int]) -> int:
    """Ticks of ``root`` and its descendants, not descending into other watched processes
    (the supervisor is the parent of every other stack process: each is counted once)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table or (pid != root and pid in stop):
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, ()))
    return total


@dataclass(frozen=True)
class Snapshot:
    """CPU ticks so far: of each watched process tree, and of everything else on the machine.

    ``other`` is every user-space process that is neither watched nor this benchmark (with
    its wrk children); kernel threads are left out. A rise in it during a run means another
    workload shared the CPUs, which makes that run's latency and throughput less trustworthy.
    """

    ticks: dict[str, int]
    other: int


def _is_kernel_thread(pid: int, ppid: int) -> bool:
    return pid == 2 or ppid == 2


def snapshot(watched: list[Watched]) -> Snapshot:
    """CPU ticks so far of each watched process (with its descendants), by name."""
    table = _process_table()
    pids = {w.pid for w in watched}
    ticks = {w.name: _tree_ticks(w.pid, table, pids) for w in watched}
    everything = sum(t for pid, (ppid, t) in table.items() if not _is_kernel_thread(pid, ppid))
    own = _tree_ticks(os.getpid(), table, pids)
    return Snapshot(ticks=ticks, other=everything - sum(ticks.values()) - own)


def per_request_us(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """CPU microseconds per request of each process between two snapshots."""
    if requests <= 0:
        return dict.fromkeys(after.ticks, 0.0)
    scale = 1e6 / CLK_TCK / requests
    return {n: (t - before.ticks.get(n, 0)) * scale for n, t in after.ticks.items()}


def busy_cores(before: Snapshot, after: Snapshot, seconds: float) -> dict[str, float]:
    """Average cores each watched process used between two snapshots."""
    return {n: (t - before.ticks.get(n, 0)) / CLK_TCK / seconds for n, t in after.ticks.items()}


def other_cores(before: Snapshot, after: Snapshot, seconds: float) -> float:
    """Average cores used by unrelated processes between two snapshots."""
    return max(0, after.other - before.other) / CLK_TCK / seconds


def by_group(per_process: dict[str, float], watched: list[Watched]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for w in watched:
        groups[w.group] = groups.get(w.group, 0.0) + per_process.get(w.name, 0.0)
    return groups


def group_of(name: str) -> str:
    """Which total a stack process counts towards."""
    if name in ("openbao", "valkey", "nginx", "upstream", "loadgen"):
        return name
    if name.startswith("nats"):
        return "nats-server"
    return "switchyard"
