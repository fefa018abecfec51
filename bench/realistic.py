"""Rows for real LLM traffic (issue 14): requests that wait, paced streams, a mixed load, idle.

The rows above them measure back-to-back requests against an instant upstream; real requests
wait 0.05-30 s for a provider and stream tokens at 10-100 per second. Every row here runs direct
(load generator -> upstream) and via Switchyard in the same run:

* ``isolated50`` / ``isolated500``: one client, sequential, upstream (nginx) answers after 50 /
  500 ms (wrk ``-c1``). CPU per request is also shown above idle: the idle rate of each process
  (measured just before) times the run's length is subtracted, so a slow request is not charged
  for timers that tick anyway.
* ``streams200``: 200 concurrent streams of 100 chunks paced 20 ms apart (a 50 tokens/s model);
  ``streams1000``: 1,000 concurrent streams of 20 chunks paced 100 ms apart. Both are ~10,000
  chunks/s. The upstream is :mod:`bench.paced`, the load generator :mod:`bench.streamload`
  (each connection starts its next stream when one ends; starts are spread over one stream's
  length).
* ``mixed``: 100 paced streams (100 x 20 ms), 100 clients of a 500 ms non-streamed answer and 4
  clients of a 50 ms one, at once.
* ``idle``: the stack with no traffic: CPU per process, wake-ups and NATS messages per second.

For each load: CPU per request and per streamed chunk (every Switchyard process plus
nats-server), added TTFT (p50/p99 via Switchyard minus direct), gap distortion (for each chunk
after the first: arrival gap minus send gap, p50/p99), chunk delay (arrival - send), memory per
open stream (RSS of the stack during the load minus before it, divided by the open streams),
wake-ups (voluntary context switches) and NATS messages per request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cpu, wakeups
from bench.load import LoadSpec, run_wrk
from bench.runner import NOISY_CORES, RunOptions, wait_for_quiet
from bench.scenarios import request_body
from bench.upstream import MODEL, PacedUpstream, Upstream

STACK_GROUPS = ("switchyard", "nats-server")
# Everything `switchyard up` runs: the idle target counts OpenBao and Valkey too.
IDLE_GROUPS = ("switchyard", "nats-server", "openbao", "valkey")
REAL_KEYS = ("isolated50", "isolated500", "streams200", "streams1000", "mixed", "idle")
REAL = "real"  # --only real: every row of this module


@dataclass(frozen=True)
class Isolated:
    key: str
    label: str
    route: str  # nginx prefix and Switchyard route alias
    duration_factor: float  # x --duration: a 500 ms request needs a longer run for its count


ISOLATED = (
    Isolated("isolated50", "isolated, 50 ms upstream, 1 client", "delay50", 1.0),
    Isolated("isolated500", "isolated, 500 ms upstream, 1 client", "delay500", 2.0),
)


@dataclass(frozen=True)
class LoadClass:
    """One kind of client in a load: route alias and paced/nginx path, and how many."""

    name: str
    route: str
    slots: int
    stream: bool
    chunks: int = 0
    stagger_s: float = 0.0
    nginx: bool = False  # the upstream is nginx (``route`` is its prefix), else bench.paced


@dataclass(frozen=True)
class Load:
    key: str
    label: str
    classes: tuple[LoadClass, ...]


# Paced prefixes (bench.paced) behind the stack's routes (bench.stack.PACED_ROUTES).
PACED_PREFIX = {"pace20": "pace/100x20", "pace100": "pace/20x100", "slow500": "delay/500"}
LOADS = (
    Load(
        "streams200",
        "200 streams x 100 chunks, 20 ms apart",
        (LoadClass("streams", "pace20", 200, True, chunks=100, stagger_s=2.0),),
    ),
    Load(
        "streams1000",
        "1,000 streams x 20 chunks, 100 ms apart",
        (LoadClass("streams", "pace100", 1000, True, chunks=20, stagger_s=2.0),),
    ),
    Load(
        "mixed",
        "mixed: 100 streams + 100 x 500 ms + 4 x 50 ms",
        (
            LoadClass("streams", "pace20", 100, True, chunks=100, stagger_s=2.0),
            LoadClass("slow500", "slow500", 100, False, stagger_s=0.5),
            LoadClass("quick50", "delay50", 4, False, nginx=True),
        ),
    ),
)


def selected_real(only: set[str]) -> tuple[str, ...]:
    if not only or REAL in only:
        return REAL_KEYS
    return tuple(k for k in REAL_KEYS if k in only)


# ---- isolated requests (wrk -c1) ----


@dataclass(frozen=True)
class Setup:
    """What every real-traffic row needs: tools, upstreams, the stack and how long to run."""

    wrk: Path
    upstream: Upstream
    paced: PacedUpstream
    tail_url: str
    api_key: str
    watched: list[cpu.Watched]
    monitor_port: int
    opts: RunOptions


def _measure_wrk(
    setup: Setup, spec: LoadSpec, seconds: float, idle_ms_per_s: dict[str, float]
) -> dict[str, Any]:
    watched, opts, monitor_port = setup.watched, setup.opts, setup.monitor_port
    wait_for_quiet(watched, opts.quiet_wait_s)
    if opts.warmup_s:
        run_wrk(setup.wrk, spec, opts.warmup_s, timeout_s=opts.wrk_timeout_s)
    time.sleep(0.3)
    before, c0 = cpu.snapshot(watched), wakeups.counters(watched, monitor_port)
    t0 = time.monotonic()
    result = run_wrk(setup.wrk, spec, seconds, timeout_s=opts.wrk_timeout_s)
    after, c1 = cpu.snapshot(watched), wakeups.counters(watched, monitor_port)
    elapsed = time.monotonic() - t0
    n = result.requests
    per = cpu.per_request_us(before, after, n)
    # Above idle: what the process would have spent anyway over the run (idle rate x time).
    above = {
        name: us - idle_ms_per_s.get(name, 0.0) * 1000 * elapsed / n if n else 0.0
        for name, us in per.items()
    }
    return {
        "wrk": result.to_json(),
        "cpu_us_per_request": per,
        "cpu_us_per_request_by_group": cpu.by_group(per, watched),
        "cpu_above_idle_us_per_request_by_group": cpu.by_group(above, watched),
        "wakeups_per_request": wakeups.per_unit(c0, c1, n),
        "background_cores": cpu.other_cores(before, after, elapsed),
        "errors": result.error_count,
    }


def run_isolated(
    setup: Setup, idle_ms_per_s: dict[str, float], keys: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sc in ISOLATED:
        if sc.key not in keys:
            continue
        seconds = setup.opts.duration_s * sc.duration_factor
        specs = {
            "direct": LoadSpec(
                setup.upstream.url(sc.route), request_body(MODEL, stream=False), 1, 1
            ),
            "switchyard": LoadSpec(
                setup.tail_url, request_body(sc.route, stream=False), 1, 1, api_key=setup.api_key
            ),
        }
        pair = {}
        for target, spec in specs.items():
            print(f"bench: {sc.key:<14} {target:<10} c=1   ...", end="", flush=True)
            run = _measure_wrk(setup, spec, seconds, idle_ms_per_s)
            lat = run["wrk"]["latency_us"]
            print(
                f" {run['wrk']['rps']:7.1f} req/s  p50 {lat['p50'] / 1000:7.3f} ms"
                f"  p99 {lat['p99'] / 1000:7.3f} ms"
                + (f"  ERRORS: {run['errors']}" if run["errors"] else ""),
                flush=True,
            )
            pair[target] = run
        via, direct = pair["switchyard"], pair["direct"]
        out[sc.key] = {
            "label": sc.label,
            "kind": "isolated",
            **pair,
            "errors": via["errors"] + direct["errors"],
            "added_p50_ms": (via["wrk"]["latency_us"]["p50"] - direct["wrk"]["latency_us"]["p50"])
            / 1000,
            "added_p99_ms": (via["wrk"]["latency_us"]["p99"] - direct["wrk"]["latency_us"]["p99"])
            / 1000,
            "cpu_us_per_request": _sum(via["cpu_us_per_request_by_group"], STACK_GROUPS),
            "cpu_above_idle_us_per_request": _sum(
                via["cpu_above_idle_us_per_request_by_group"], STACK_GROUPS
            ),
        }
    return out


# ---- paced streams and mixed loads (bench.streamload) ----


def _spec(load: Load, setup: Setup, *, via: bool) -> dict[str, Any]:
    opts = setup.opts
    classes = []
    for c in load.classes:
        if via:
            url, model, key = setup.tail_url, c.route, setup.api_key
        elif c.nginx:
            url, model, key = setup.upstream.url(c.route), MODEL, ""
        else:
            url, model, key = setup.paced.url(PACED_PREFIX[c.route]), MODEL, ""
        classes.append(
            {
                "name": c.name,
                "url": url,
                "body": request_body(model, stream=c.stream),
                "api_key": key,
                "slots": c.slots,
                "stream": c.stream,
                "chunks": c.chunks,
                "stagger_s": c.stagger_s,
            }
        )
    # Warm-up covers the staggered start and one full stream, so the window sees steady state.
    longest = max(c.stagger_s for c in load.classes)
    return {
        "warmup_s": max(opts.warmup_s, longest + 2.5),
        "duration_s": opts.duration_s,
        "drain_s": 30.0,
        "timeout_s": 60.0,
        "classes": classes,
    }


def _run_streamload(
    spec: dict[str, Any], watched: list[cpu.Watched], monitor_port: int
) -> dict[str, Any]:
    """Run the load generator; CPU, wake-ups and NATS counts over its measured window."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.streamload", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with_gen = [*watched, cpu.Watched("loadgen", proc.pid, "loadgen")]
    rss_before = wakeups.rss_kib(watched)
    rss_during: dict[str, int] = {}
    timer: threading.Timer | None = None
    before = after = None
    c0 = c1 = None
    t0 = t1 = 0.0
    result: dict[str, Any] | None = None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("MARK start"):
                before, c0, t0 = (
                    cpu.snapshot(with_gen),
                    wakeups.counters(watched, monitor_port),
                    time.monotonic(),
                )
                timer = threading.Timer(
                    float(spec["duration_s"]) / 2,
                    lambda: rss_during.update(wakeups.rss_kib(watched)),
                )
                timer.start()
            elif line.startswith("MARK end"):
                after, c1, t1 = (
                    cpu.snapshot(with_gen),
                    wakeups.counters(watched, monitor_port),
                    time.monotonic(),
                )
            elif line.startswith("RESULT "):
                result = json.loads(line.removeprefix("RESULT "))
    finally:
        if timer is not None:
            timer.cancel()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if result is None or before is None or after is None or c0 is None or c1 is None:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"the load generator failed (exit {proc.returncode}):\n{err[-3000:]}")
    seconds = t1 - t0
    cores = cpu.busy_cores(before, after, seconds)
    groups = cpu.by_group(cores, with_gen)
    return {
        "load": result,
        "seconds": seconds,
        "cores": cores,
        "cores_by_group": groups,
        "wakeups_per_s": wakeups.per_unit(c0, c1, seconds),
        "rss_before_kib": rss_before,
        "rss_during_kib": rss_during,
        "background_cores": cpu.other_cores(before, after, seconds),
    }


def _pcts(dist: dict[str, Any]) -> tuple[float, float]:
    return float(dist["p50"]), float(dist["p99"])


def _load_doc(load: Load, pair: dict[str, dict[str, Any]]) -> dict[str, Any]:
    via, direct = pair["switchyard"], pair["direct"]
    classes_via, classes_direct = via["load"]["classes"], direct["load"]["classes"]
    stack_cores = _sum(via["cores_by_group"], STACK_GROUPS)
    seconds = via["seconds"]
    chunks = sum(c["chunks"] for c in classes_via.values())
    completed = sum(c["completed"] for c in classes_via.values())
    stream_slots = sum(c.slots for c in load.classes if c.stream)
    streams = sum(classes_via[c.name]["completed"] for c in load.classes if c.stream)
    stack_names = [n for n in via["rss_during_kib"] if _group_is(n, STACK_GROUPS)]
    rss_delta = sum(
        via["rss_during_kib"].get(n, 0) - via["rss_before_kib"].get(n, 0) for n in stack_names
    )
    per_class = {}
    for c in load.classes:
        v, d = classes_via[c.name], classes_direct[c.name]
        entry: dict[str, Any] = {
            "slots": c.slots,
            "stream": c.stream,
            "rps_direct": d["rps"],
            "rps_switchyard": v["rps"],
            "rps_ratio": v["rps"] / d["rps"] if d["rps"] else float("nan"),
            "added_latency_p50_ms": v["latency_ms"]["p50"] - d["latency_ms"]["p50"],
            "added_latency_p99_ms": v["latency_ms"]["p99"] - d["latency_ms"]["p99"],
            "errors": v["errors"] + d["errors"],
        }
        if c.stream:
            (vt50, vt99), (dt50, dt99) = _pcts(v["ttft_ms"]), _pcts(d["ttft_ms"])
            entry |= {
                "chunks_per_s_direct": d["chunks_per_s"],
                "chunks_per_s_switchyard": v["chunks_per_s"],
                "ttft_ms_direct": [dt50, dt99],
                "ttft_ms_switchyard": [vt50, vt99],
                "added_ttft_p50_ms": vt50 - dt50,
                "added_ttft_p99_ms": vt99 - dt99,
                "gap_distortion_ms_direct": list(_pcts(d["gap_distortion_ms"])),
                "gap_distortion_ms_switchyard": list(_pcts(v["gap_distortion_ms"])),
                "chunk_delay_ms_direct": list(_pcts(d["chunk_delay_ms"])),
                "chunk_delay_ms_switchyard": list(_pcts(v["chunk_delay_ms"])),
            }
        per_class[c.name] = entry
    errors = sum(c["errors"] for t in pair.values() for c in t["load"]["classes"].values())
    wake = via["wakeups_per_s"]
    return {
        "label": load.label,
        "kind": "load",
        "direct": direct,
        "switchyard": via,
        "classes": per_class,
        "errors": errors,
        "stack_cores": stack_cores,
        "requests_per_s": completed / seconds if seconds else 0.0,
        "chunks_per_s": chunks / seconds if seconds else 0.0,
        "streams_per_s": streams / seconds if seconds else 0.0,
        "cpu_us_per_chunk": stack_cores * 1e6 * seconds / chunks if chunks else float("nan"),
        "cpu_us_per_request": stack_cores * 1e6 * seconds / completed
        if completed
        else float("nan"),
        "rss_kib_per_open_stream": rss_delta / stream_slots if stream_slots else float("nan"),
        "wakeups_per_request": (
            sum(v for n, v in wake["wakeups"].items() if _group_is(n, STACK_GROUPS))
            * seconds
            / completed
            if completed
            else float("nan")
        ),
        "nats_msgs_per_request": (
            (wake["nats_in"] + wake["nats_out"]) * seconds / completed
            if completed
            else float("nan")
        ),
        "loadgen_cores": {t: pair[t]["cores"].get("loadgen", 0.0) for t in pair},
        "upstream_cores": {
            t: sum(pair[t]["cores_by_group"].get(g, 0.0) for g in ("nginx", "upstream"))
            for t in pair
        },
    }


def run_loads(setup: Setup, keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for load in LOADS:
        if load.key not in keys:
            continue
        pair = {}
        for target, via in (("direct", False), ("switchyard", True)):
            wait_for_quiet(setup.watched, setup.opts.quiet_wait_s)
            print(f"bench: {load.key:<14} {target:<10} ...", end="", flush=True)
            spec = _spec(load, setup, via=via)
            run = _run_streamload(spec, setup.watched, setup.monitor_port)
            classes = run["load"]["classes"]
            errs = sum(c["errors"] for c in classes.values())
            desc = "  ".join(
                f"{name}: {c['rps']:.0f} req/s"
                + (f" {c['chunks_per_s']:.0f} chunks/s" if c["chunks"] else "")
                for name, c in classes.items()
            )
            noisy = run["background_cores"] > NOISY_CORES
            print(
                f" {desc}  stack {_sum(run['cores_by_group'], STACK_GROUPS):.2f} cores"
                + (f"  ERRORS: {errs}" if errs else "")
                + (f"  (other load {run['background_cores']:.2f} cores)" if noisy else ""),
                flush=True,
            )
            pair[target] = run
        out[load.key] = _load_doc(load, pair)
    return out


# ---- idle ----


def run_idle(watched: list[cpu.Watched], monitor_port: int, seconds: float) -> dict[str, Any]:
    """The stack with no traffic: CPU (ms/s) per process, wake-ups/s and NATS messages/s."""
    print(f"bench: idle           {seconds:.0f} s without traffic ...", end="", flush=True)
    before, c0 = cpu.snapshot(watched), wakeups.counters(watched, monitor_port)
    time.sleep(seconds)
    after, c1 = cpu.snapshot(watched), wakeups.counters(watched, monitor_port)
    cores = cpu.busy_cores(before, after, seconds)
    groups = cpu.by_group(cores, watched)
    total = _sum(groups, IDLE_GROUPS)
    print(f" {total * 100:.2f}% of one core", flush=True)
    return {
        "label": "idle stack",
        "kind": "idle",
        "seconds": seconds,
        "ms_per_s": {n: c * 1000 for n, c in cores.items()},
        "groups_pct": {g: c * 100 for g, c in groups.items()},
        "stack_pct": total * 100,
        "wakeups_per_s": wakeups.per_unit(c0, c1, seconds),
        "background_cores": cpu.other_cores(before, after, seconds),
        "errors": 0,
    }


def stream_model(real: dict[str, Any]) -> dict[str, float] | None:
    """CPU per stream (setup) and per chunk (marginal), from the two stream loads.

    Both run ~10,000 chunks/s but start 100 vs 500 streams/s, so
    ``stack cores = a x streams/s + b x chunks/s`` has one solution: ``a`` us per stream,
    ``b`` us per chunk.
    """
    if "streams200" not in real or "streams1000" not in real:
        return None
    r1, r2 = real["streams200"], real["streams1000"]
    s1, c1, y1 = r1["streams_per_s"], r1["chunks_per_s"], r1["stack_cores"] * 1e6
    s2, c2, y2 = r2["streams_per_s"], r2["chunks_per_s"], r2["stack_cores"] * 1e6
    det = s1 * c2 - s2 * c1
    if abs(det) < 1e-9:
        return None
    return {
        "us_per_stream": (y1 * c2 - y2 * c1) / det,
        "us_per_chunk": (s1 * y2 - s2 * y1) / det,
    }


def _sum(groups: dict[str, float], names: tuple[str, ...]) -> float:
    return float(sum(groups.get(g, 0.0) for g in names))


def _group_is(name: str, groups: tuple[str, ...]) -> bool:
    return cpu.group_of(name) in groups
