"""Soak: bounded mixed load on a local stack, watching every process for steady growth.

``python -m tests.soak [--seconds 600] [--concurrency 8]`` starts a whole stack (the same
processes ``switchyard up`` runs, a fake provider in-process) and sends, from ``concurrency``
loops, a mix of non-streaming and streaming chat, embeddings, errors (provider 400 and 500,
unknown models, missing keys) and cancellations (a stream abandoned after its first chunk).
Every 10 s it samples each process's resident memory and open files from ``/proc`` and, for
Switchyard's own processes, the asyncio tasks they report on ``/metrics``.

The report gives, per process, the value at the end of warm-up (the first fifth of the run,
at least 20 s and at most a third) and at the end, and the growth between them (medians of
three samples each, so one busy moment does not decide it); the bar is growth under 10% (and,
for counts as small as open files and tasks, a few units), judged for Switchyard's processes;
the servers' memory holds data that grows with traffic and is reported only. Exit status 1
when a process died or grew past the bar. ``tests/test_soak.py`` runs a shortened form in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.stacks import Stack, start_stack
from tests.upstream import FakeOpenAI

SAMPLE_EVERY_S = 10.0
GROWTH_BAR = 0.10
MIN_JUDGED = 6  # samples after the warm-up: a start and an end median of three each, apart
SLACK = {"rss_mb": 2.0, "fds": 5, "tasks": 10}  # absolute growth always tolerated
_TASKS = re.compile(rb"^switchyard_asyncio_tasks (\d+(?:\.\d+)?)$", re.MULTILINE)
BEHAVIOURS = {
    "chat": "echo",
    "paced": "paced:20",
    "refuses": "status:400",
    "broken": "status:500",
    "embed": "echo",
}


@dataclass
class Series:
    name: str
    pid: int
    metrics_url: str | None  # None for the servers (nats-server, Valkey, OpenBao)
    samples: dict[str, list[float]] = field(
        default_factory=lambda: {"rss_mb": [], "fds": [], "tasks": []}
    )


@dataclass
class Outcome:
    processes: list[dict[str, Any]]
    requests: dict[str, int]
    died: list[str]

    @property
    def passed(self) -> bool:
        return not self.died and all(p["ok"] for p in self.processes)


def _proc_sample(pid: int) -> tuple[float, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return None
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kb / 1024, fds


async def _tasks(http: httpx.AsyncClient, url: str | None) -> float | None:
    if url is None:
        return None
    with contextlib.suppress(httpx.HTTPError):
        found = _TASKS.search((await http.get(url)).content)
        return float(found.group(1)) if found else None
    return None


def _series(stack: Stack) -> list[Series]:
    out = []
    for phase in stack.supervisor.procs:
        for proc in phase:
            pid = proc.pid
            if pid is None:
                continue
            health = proc.spec.health_url or ""
            url = None
            if proc.spec.kind == "component" and health.startswith("http"):
                url = re.sub(r"/(ready|health)$", "/metrics", health)
            out.append(Series(proc.spec.name, pid, url))
    return out


async def _sampler(
    stack: Stack, series: list[Series], stop: asyncio.Event, every_s: float
) -> list[str]:
    died: list[str] = []
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            for s in series:
                got = _proc_sample(s.pid)
                if got is None:
                    if s.name not in died:
                        died.append(s.name)
                    continue
                s.samples["rss_mb"].append(got[0])
                s.samples["fds"].append(got[1])
                tasks = await _tasks(http, s.metrics_url)
                if tasks is not None:
                    s.samples["tasks"].append(tasks)
            if stop.is_set():  # the load ended: that was its last sample
                return died
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


async def _one(http: httpx.AsyncClient, stack: Stack, counts: dict[str, int]) -> None:
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    url = random.choice([stack.tail_url, stack.gateway_url])
    roll = random.random()
    chat = {"messages": [{"role": "user", "content": "soak " * random.randint(1, 50)}]}
    kind = "chat"
    try:
        if roll < 0.35:
            await http.post(
                f"{url}/v1/chat/completions", json={**chat, "model": "chat"}, headers=auth
            )
        elif roll < 0.6:
            kind = "stream"
            body = {**chat, "model": random.choice(["chat", "paced"]), "stream": True}
            async with http.stream(
                "POST", f"{url}/v1/chat/completions", json=body, headers=auth
            ) as r:
                async for _ in r.aiter_bytes():
                    pass
        elif roll < 0.7:
            kind = "cancelled"
            body = {**chat, "model": "paced", "stream": True}
            async with http.stream(
                "POST", f"{url}/v1/chat/completions", json=body, headers=auth
            ) as r:
                async for _ in r.aiter_bytes():
                    break  # walk away after the first bytes
        elif roll < 0.8:
            kind = "embed"
            await http.post(
                f"{url}/v1/embeddings", json={"model": "embed", "input": "x"}, headers=auth
            )
        else:
            kind = "error"
            model = random.choice(["refuses", "broken", "no-such-model", "chat"])
            headers = {} if model == "chat" else auth  # a missing key: 401
            await http.post(
                f"{url}/v1/chat/completions", json={**chat, "model": model}, headers=headers
            )
    except httpx.HTTPError:
        kind = "transport_error"
    counts[kind] = counts.get(kind, 0) + 1


async def _load(stack: Stack, until: float, concurrency: int, counts: dict[str, int]) -> None:
    async def loop() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while time.monotonic() < until:
                await _one(http, stack, counts)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(loop())


def _verdict(series: list[Series], warmup_samples: int) -> list[dict[str, Any]]:
    """Growth per process. The bar applies to Switchyard's processes; the servers are
    reported but not judged: their memory holds data that grows with traffic by design (the
    usage stream keeps every event, Valkey keeps spend counters per key, day and model)."""
    rows = []
    for s in series:
        judged = s.metrics_url is not None
        row: dict[str, Any] = {"process": s.name, "ok": True, "judged": judged}
        for metric, values in s.samples.items():
            after = values[warmup_samples:]
            if len(after) < MIN_JUDGED:
                # Fewer, and the start and end medians share samples: growth reads as 0
                # whatever happened, and the soak would pass on a leak.
                row["ok"] = row["ok"] and not (judged and values)
                continue
            start = statistics.median(after[:3])
            end = statistics.median(after[-3:])
            growth = (end - start) / start if start else 0.0
            ok = growth < GROWTH_BAR or end - start <= SLACK[metric]
            row[metric] = {"start": round(start, 1), "end": round(end, 1), "growth": growth}
            row["ok"] = row["ok"] and (ok or not row["judged"])
        rows.append(row)
    return rows


async def soak(
    root: Path, seconds: float, concurrency: int = 8, sample_every_s: float = SAMPLE_EVERY_S
) -> Outcome:
    """Run the soak for ``seconds`` on a stack under ``root``; the outcome and the samples
    (every ``sample_every_s``: at least :data:`MIN_JUDGED` must follow the warm-up)."""
    upstream = FakeOpenAI()
    upstream.start()
    extra = {
        "providers": {
            "fake": {"kind": "openai-compatible", "api_base": upstream.base_url, "concurrency": 32}
        },
        "routes": {
            alias: {"deployments": [{"provider": "fake", "model": model}]}
            for alias, model in BEHAVIOURS.items()
        },
        "logging": {"level": "info"},
    }
    stack = await start_stack(root, extra)
    try:
        series = _series(stack)
        counts: dict[str, int] = {}
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sampler(stack, series, stop, sample_every_s))
        await _load(stack, time.monotonic() + seconds, concurrency, counts)
        stop.set()
        died = await sampler
        upstream.calls.clear()
        warmup = min(max(20.0, seconds / 5), seconds / 3)
        rows = _verdict(series, int(warmup // sample_every_s) + 1)
        return Outcome(rows, counts, died)
    finally:
        await stack.supervisor.stop()
        upstream.stop()


def report(outcome: Outcome, seconds: float) -> str:
    """The soak's result as a Markdown table (what docs/security.md quotes)."""
    total = sum(outcome.requests.values())
    lines = [
        f"Soak: {seconds:.0f} s, {total} requests "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcome.requests.items()))}); "
        f"processes died: {', '.join(outcome.died) or 'none'}",
        "",
        "| process | RSS MB start -> end | open files start -> end | asyncio tasks start -> end |",
        "|---|---|---|---|",
    ]

    def cell(row: dict[str, Any], metric: str) -> str:
        got = row.get(metric)
        if got is None:
            return "-"
        return f"{got['start']:g} -> {got['end']:g} ({got['growth']:+.1%})"

    for row in outcome.processes:
        flag = "" if row["ok"] else " **GREW**"
        flag += "" if row["judged"] else " (server: data)"
        lines.append(
            f"| {row['process']}{flag} | {cell(row, 'rss_mb')} | {cell(row, 'fds')} | "
            f"{cell(row, 'tasks')} |"
        )
    lines.append("")
    lines.append("PASS" if outcome.passed else "FAIL")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="switchyard-soak-") as root:
        outcome = asyncio.run(soak(Path(root), args.seconds, args.concurrency))
    print(report(outcome, args.seconds))
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
