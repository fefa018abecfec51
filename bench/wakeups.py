"""What a request costs besides CPU time: process wake-ups, NATS messages, resident memory.

* Wake-ups: ``voluntary_ctxt_switches`` of every thread (``/proc/<pid>/task/*/status``) of a
  watched process. A voluntary switch is the thread going to sleep (epoll, futex) and so
  counts, within one, the times it was woken; each costs a scheduler round trip and cold
  caches, which is what makes an idle-then-busy request dearer than a back-to-back one.
* NATS messages: ``in_msgs`` / ``out_msgs`` from nats-server's ``/varz`` (every message any
  client published, and every delivery to a subscriber).
* Memory: ``VmRSS`` of each watched process tree.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cpu import Watched


def _threads_switches(pid: int) -> int:
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
                break
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def _tree(pid: int, stop: set[int]) -> list[int]:
    """``pid`` and its descendants, not descending into other watched processes."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p != pid and p in stop:
            continue
        pids.append(p)
        todo += _children(p)
    return pids


def rss_kib(watched: list[Watched]) -> dict[str, int]:
    """Resident memory (KiB) of each watched process tree."""
    stop = {w.pid for w in watched}
    out: dict[str, int] = {}
    for w in watched:
        total = 0
        for p in _tree(w.pid, stop):
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            except OSError:
                continue
        out[w.name] = total
    return out


def nats_msgs(monitor_port: int) -> tuple[int, int]:
    """(in_msgs, out_msgs) of nats-server so far; (0, 0) when it cannot be read."""
    if not monitor_port:
        return 0, 0
    try:
        url = f"http://127.0.0.1:{monitor_port}/varz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError):
        return 0, 0
    return int(doc.get("in_msgs", 0)), int(doc.get("out_msgs", 0))


@dataclass(frozen=True)
class Counters:
    """Wake-ups per watched process and NATS message counts, at one moment."""

    switches: dict[str, int]
    nats_in: int
    nats_out: int


def counters(watched: list[Watched], monitor_port: int) -> Counters:
    stop = {w.pid for w in watched}
    switches = {w.name: sum(_threads_switches(p) for p in _tree(w.pid, stop)) for w in watched}
    nin, nout = nats_msgs(monitor_port)
    return Counters(switches, nin, nout)


def per_unit(before: Counters, after: Counters, units: float) -> dict[str, Any]:
    """Per unit (request, second...): ``wakeups`` of each process, and NATS messages
    (``nats_in``: published by clients, ``nats_out``: delivered to subscribers)."""
    if units <= 0:
        return {"wakeups": {}, "nats_in": 0.0, "nats_out": 0.0}
    return {
        "wakeups": {n: (v - before.switches.get(n, 0)) / units for n, v in after.switches.items()},
        "nats_in": (after.nats_in - before.nats_in) / units,
        "nats_out": (after.nats_out - before.nats_out) / units,
    }
