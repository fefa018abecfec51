"""Fair queueing's cost: CPU per request with the scheduler on vs first come, first served.

``python -m bench.fairness`` starts two stacks side by side from the same generated config but
for ``routing.fair_queueing`` (``false``: every request straight to its dispatch queue, FCFS;
``true``: the default), each with 2 heads and 2 model-proxies in front of the nginx and paced
upstreams, and runs each load on them alternately (FCFS, fair, fair, FCFS, ``--rounds`` times):

* ``saturated``: the 50 ms upstream behind a deployment of concurrency 16, at 64 connections
  (wrk), so 48 requests
  always wait: with fair queueing on, every one of them goes through HOLD and the feeder
  (held, moved into dispatch, purged from HOLD, its acknowledgement tapped);
* ``saturated_stream``: answers streamed like a model's (``bench.paced``: 40 chunks with
  jittered gaps of 5-15 ms) behind a deployment of concurrency 32, at 128 connections: the same
  3:1 oversubscription with LLM-shaped answers, each carrying 40 chunks of work besides its
  scheduling. Exactly paced chunks kept FCFS's streams in step, sharing wake-ups in every
  process, which the fair path's few milliseconds per move broke: that measured ~10% dearer
  in the tail, model-proxies and Valkey alike, none of which schedule anything;
* ``unsaturated``: the fast upstream at concurrency 256: the fast path, where the scheduler
  only checks its state.

CPU is summed over every Switchyard process and nats-server (``bench.cpu``), per completed
request. Results go to ``bench/results/fairness.json`` and ``.md``; the target is at most 5%
more CPU per request than FCFS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench import cpu, report
from bench.deps import ensure_tools
from bench.load import LoadSpec
from bench.runner import RunOptions, RunResult, measure
from bench.scenarios import request_body, scenario, switchyard_body
from bench.stack import BenchStack, write_stack_config
from bench.upstream import PacedUpstream, start_paced, start_upstream
from switchyard.schemas.scheduling import SchedState, capped, of_service_tier
from switchyard.stack.ports import listen_port
from switchyard.workers.head.admission import Admission

TARGET_PCT = 5.0
ORDER = ("fcfs", "fair", "fair", "fcfs")
SATURATED_CONCURRENCY = 16
# The LLM-shaped load: its own route to the paced upstream, 40 chunks ~10 ms apart (jittered).
STREAM_ROUTE, STREAM_PACE = "fairstream", "pace/40x10j"
STREAM_CONCURRENCY, STREAM_CONNECTIONS = 32, 128
LOADS = {
    "saturated": "delay50_c64",
    "saturated_stream": STREAM_ROUTE,
    "unsaturated": "nonstream_c64",
}


def decision_ns(calls: int = 200_000) -> float:
    """CPU of the head's extra work per request on the fast path (hold or dispatch, and the
    priority it runs at), in process: nanoseconds per request, best of 5."""
    admission = Admission.__new__(Admission)  # the decision alone, without a KV follower
    admission.enabled = True
    admission._states = {"d": SchedState(heads=2, window_s=0.05, at=time.time() + 86400)}
    admission._sent = {}
    admission._lease_until = 0.0
    best = float("inf")
    for _ in range(5):
        began = time.process_time_ns()
        for _ in range(calls):
            admission.direct("d", 256)
            capped(of_service_tier(None) or "default", "interactive")
        best = min(best, (time.process_time_ns() - began) / calls)
    return best


def _configure(stack: BenchStack, paced: PacedUpstream, *, fair: bool) -> None:
    doc: dict[str, Any] = yaml.safe_load(stack.config_file.read_text(encoding="utf-8"))
    doc["providers"]["bench-delay50"]["concurrency"] = SATURATED_CONCURRENCY
    doc["providers"][f"bench-{STREAM_ROUTE}"] = {
        "kind": "openai-compatible",
        "api_base": paced.base(STREAM_PACE),
        "concurrency": STREAM_CONCURRENCY,
    }
    model = doc["routes"]["delay50"]["deployments"][0]["model"]
    doc["routes"][STREAM_ROUTE] = {
        "deployments": [{"provider": f"bench-{STREAM_ROUTE}", "model": model}]
    }
    doc["routing"] = {"fair_queueing": fair}
    stack.config_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _load(key_name: str, url: str, api_key: str) -> LoadSpec:
    if key_name == STREAM_ROUTE:
        body = request_body(STREAM_ROUTE, stream=True)
        return LoadSpec(url, body, STREAM_CONNECTIONS, threads=2, api_key=api_key)
    sc = scenario(key_name)
    return LoadSpec(url, switchyard_body(sc), sc.connections, sc.threads, api_key)


def _watched(stack: BenchStack) -> list[cpu.Watched]:
    procs, supervisor = stack.processes()
    watched = [cpu.Watched(p.name, p.pid, cpu.group_of(p.name)) for p in procs]
    if supervisor is not None:
        watched.append(cpu.Watched("supervisor", supervisor, "switchyard"))
    return watched


def _total(run: RunResult) -> float:
    return sum(run.cpu_us.values())


def _mean(runs: list[RunResult], process: str = "") -> float:
    """Mean CPU per request over ``runs``: every process, or just ``process``."""
    return statistics.mean(r.cpu_us.get(process, 0.0) if process else _total(r) for r in runs)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    tools = ensure_tools()
    ports: set[int] = set()
    opts = RunOptions(
        duration_s=args.duration,
        warmup_s=args.warmup,
        wrk_timeout_s=10.0,
        ttft_requests=0,
        quiet_wait_s=args.quiet_wait,
    )
    upstream = start_upstream(tools, workdir / "nginx", listen_port(avoid=ports))
    paced = start_paced(workdir / "paced", listen_port(avoid=ports))
    loads = {load: LOADS[load] for load in args.loads}
    results: dict[str, dict[str, list[RunResult]]] = {
        load: {"fcfs": [], "fair": []} for load in loads
    }
    stacks: dict[str, BenchStack] = {}
    try:
        # Both stacks run side by side (one idles, ~0.02 cores, while the other is measured) and
        # each load alternates between them A-B-B-A, ROUNDS times: this VM changes speed over
        # minutes (the same row swung 20% between consecutive stacks when they ran one after the
        # other), and close alternation weighs a slow phase on both modes alike.
        for mode in ("fcfs", "fair"):
            (workdir / mode).mkdir(parents=True, exist_ok=True)
            stack = write_stack_config(workdir / mode, ports, upstream, heads=2, modelproxies=2)
            _configure(stack, paced, fair=mode == "fair")
            print(f"bench: fairness: starting a stack with fair_queueing={mode == 'fair'}")
            stack.up()
            stacks[mode] = stack
        keys = {mode: stack.api_key() for mode, stack in stacks.items()}
        watched = {mode: _watched(stack) for mode, stack in stacks.items()}
        for load, key_name in loads.items():
            for mode in ORDER * args.rounds:
                spec = _load(key_name, stacks[mode].tail_url, keys[mode])
                result = measure(tools.wrk, spec, watched[mode], opts, f"{load}/{mode}")
                results[load][mode].append(result)
                print(
                    f"bench: {load:<16} {mode:<5} {result.wrk.rps:8.0f} req/s"
                    f"  {_total(result):7.0f} us CPU/request"
                    f"  errors {result.wrk.error_count}"
                    f"  other load {result.background_cores:.2f} cores",
                    flush=True,
                )
    finally:
        for stack in stacks.values():
            stack.down()
        upstream.stop()
        paced.stop()
    doc: dict[str, Any] = {
        "meta": report.machine_info(),
        "target_pct": TARGET_PCT,
        "decision_ns": round(decision_ns(), 1),
        "rounds": args.rounds,
        "loads": {},
    }
    for load, modes in results.items():
        fcfs, fair = _mean(modes["fcfs"]), _mean(modes["fair"])
        doc["loads"][load] = {
            "fcfs": [r.to_json() for r in modes["fcfs"]],
            "fair": [r.to_json() for r in modes["fair"]],
            "rps_fcfs": round(statistics.mean(r.wrk.rps for r in modes["fcfs"]), 1),
            "rps_fair": round(statistics.mean(r.wrk.rps for r in modes["fair"]), 1),
            "cpu_us_fcfs": round(fcfs, 1),
            "cpu_us_fair": round(fair, 1),
            "overhead_pct": round(100.0 * (fair - fcfs) / fcfs, 2) if fcfs else None,
            # What only the scheduler does: the feeder (control) and JetStream's extra work.
            "scheduler_us": {
                name: round(_mean(modes["fair"], name) - _mean(modes["fcfs"], name), 1)
                for name in ("control", "nats-server")
            },
        }
    return doc


def render(doc: dict[str, Any]) -> str:
    lines = [
        "| Load | FCFS req/s | Fair req/s | FCFS CPU us/request | Fair CPU us/request | Overhead"
        " | of it: control / nats-server us |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for load, row in doc["loads"].items():
        own = row["scheduler_us"]
        lines.append(
            f"| {load} | {row['rps_fcfs']:,.0f} | {row['rps_fair']:,.0f}"
            f" | {row['cpu_us_fcfs']:,.0f} | {row['cpu_us_fair']:,.0f}"
            f" | {row['overhead_pct']:+.1f}%"
            f" | {own['control']:+,.0f} / {own['nats-server']:+,.0f} |"
        )
    lines.append(
        f"\nThe head's extra decision on the fast path: {doc['decision_ns']:.0f} ns per request."
    )
    lines.append(
        f"Target: at most +{TARGET_PCT:.0f}% CPU per request. Both stacks run side by side and"
        f" each load alternates {' '.join(ORDER)}, {doc['rounds']} times; each column is the mean"
        " of its runs. 'control / nats-server' is the"
        " scheduler's own work (the feeder, and JetStream storing, moving and deleting each"
        " held request); the rest of the difference moved with every process alike."
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=2, help="A-B-B-A rounds per load")
    p.add_argument("--quiet-wait", type=float, default=30.0)
    p.add_argument(
        "--loads",
        nargs="+",
        choices=tuple(LOADS),
        default=list(LOADS),
        help="which loads to run (default: all)",
    )
    p.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-fair-"))
    try:
        doc = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = render(doc)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "fairness.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    (args.results_dir / "fairness.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
