"""``python -m bench``: the whole benchmark in one command.

Order: check tools (install with apt when missing), start nginx, start a Switchyard stack from a
generated config, measure every scenario direct and via Switchyard, measure TTFT, print and save
the results, and always stop the stack and nginx again, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cpu, realistic, report, routing
from bench.deps import MissingToolError, ensure_tools
from bench.load import WrkError
from bench.runner import RunOptions, idle_cpu, run_matrix, run_ttft
from bench.scenarios import LIMITS_BASELINE, ROUTING, SCENARIOS, switchyard_body
from bench.stack import BenchStack, StackStartError, write_stack_config
from bench.upstream import PacedUpstream, Upstream, start_paced, start_upstream
from switchyard.stack.ports import listen_port

EXIT_INVALID = 1  # some requests failed: the numbers are not meaningful
EXIT_SETUP = 2  # tools, nginx or the stack could not be started
EXIT_TARGETS = 3  # with --check: a target was missed
EXIT_INTERRUPTED = 130
# Long enough that one clock tick (10 ms) is a small idle rate (2.5 ms/s).
IDLE_WINDOW_S = 4.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    keys = [*(s.key for s in SCENARIOS), ROUTING, *realistic.REAL_KEYS, realistic.REAL]
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Switchyard vs a direct nginx upstream: throughput, latency, TTFT and CPU.",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each run")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 3 s runs, 1 s warm-up, 50 TTFT requests"
    )
    p.add_argument("--ttft-requests", type=int, default=200, help="streamed requests per target")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each run, wait up to this many seconds for other processes to go idle",
    )
    p.add_argument("--heads", type=int, default=2, help="head replicas in the stack")
    p.add_argument("--modelproxies", type=int, default=2, help="model-proxy replicas")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="limits_c64: rounds of (demo key, limited key) runs; the median is reported",
    )
    p.add_argument("--wrk-timeout", type=float, default=10.0, help="wrk per-request timeout (s)")
    p.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenarios to run (default all: {','.join(keys)})",
    )
    p.add_argument(
        "--real",
        action="store_true",
        help="only the real-traffic rows (isolated, paced streams, mixed, idle); = --only real",
    )
    p.add_argument(
        "--idle-seconds", type=float, default=20.0, help="length of the idle-stack measurement"
    )
    p.add_argument(
        "--results-dir", type=Path, default=report.RESULTS_DIR, help="where latest.json/.md go"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs and logs)")
    p.add_argument(
        "--trace-sample",
        type=float,
        default=None,
        metavar="RATIO",
        help="turn tracing on with this sampling ratio (spans go to a sink that discards them)",
    )
    p.add_argument("--check", action="store_true", help="exit 3 when a target is missed")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.ttft_requests = 3.0, 1.0, 50
    if args.real:
        args.only = ",".join(k for k in (args.only, realistic.REAL) if k)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    unknown = {k for k in args.only.split(",") if k} - set(keys)
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(keys)}")
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Cleanup must not be cut short by a second Ctrl-C."""
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in caught}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _watched(stack: BenchStack, upstream: Upstream, paced: PacedUpstream) -> list[cpu.Watched]:
    procs, supervisor = stack.processes()
    watched = [cpu.Watched(p.name, p.pid, cpu.group_of(p.name)) for p in procs]
    if supervisor is not None:
        watched.append(cpu.Watched("supervisor", supervisor, "switchyard"))
    watched.append(cpu.Watched("nginx", upstream.pid, "nginx"))
    watched.append(cpu.Watched("upstream", paced.pid, "upstream"))
    return watched


def _routing(selected: set[str]) -> dict[str, Any] | None:
    """The in-process routing benchmark, when selected (or its denominator, nonstream_c64)."""
    if selected and not selected & {ROUTING, LIMITS_BASELINE}:
        return None
    print("bench: routing        decide.choose in process ...", end="", flush=True)
    result = routing.measure()
    print(f" {result.ns_per_call:.0f} ns/call", flush=True)
    return result.to_json()


def _benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    selected = {k for k in args.only.split(",") if k}
    scenarios = tuple(s for s in SCENARIOS if not selected or s.key in selected)
    real_keys = realistic.selected_real(selected)
    options = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "wrk_timeout_s": args.wrk_timeout,
        "ttft_requests": args.ttft_requests,
        "quiet_wait_s": args.quiet_wait,
        "heads": args.heads,
        "modelproxies": args.modelproxies,
        "rounds": args.rounds,
        "quick": args.quick,
        "idle_seconds": args.idle_seconds,
    }
    routing_result = _routing(selected)  # before the stack starts: nothing else runs
    if not scenarios and not real_keys:
        return report.build_document(
            meta=report.machine_info(),
            options=options,
            runs={},
            ttft=None,
            idle_ms_per_s={},
            idle_other_cores=0.0,
            process_groups={},
            routing=routing_result,
        )
    tools = ensure_tools()
    ports: set[int] = set()  # handed out in this run; listen_port never repeats them
    opts = RunOptions(
        duration_s=args.duration,
        warmup_s=args.warmup,
        wrk_timeout_s=args.wrk_timeout,
        ttft_requests=args.ttft_requests,
        quiet_wait_s=args.quiet_wait,
    )
    upstream: Upstream | None = None
    paced: PacedUpstream | None = None
    stack: BenchStack | None = None
    try:
        upstream = start_upstream(tools, workdir / "nginx", listen_port(avoid=ports))
        print(
            f"bench: nginx upstream on 127.0.0.1:{upstream.port} (pid {upstream.pid})", flush=True
        )
        paced = start_paced(workdir / "paced", listen_port(avoid=ports))
        print(f"bench: paced upstream on 127.0.0.1:{paced.port} (pid {paced.pid})", flush=True)
        stack = write_stack_config(
            workdir,
            ports,
            upstream,
            heads=args.heads,
            modelproxies=args.modelproxies,
            paced=paced,
            trace_sample=args.trace_sample,
        )
        print(f"bench: starting Switchyard (config {stack.config_file}) ...", flush=True)
        stack.up()
        api_key = stack.api_key()
        if scenarios:
            stack.wait_for_key(api_key, switchyard_body(scenarios[0]))
        limited_key = ""
        if any(s.limited for s in scenarios):
            limited_key = stack.create_limited_key()
            stack.wait_for_key(
                limited_key, switchyard_body(next(s for s in scenarios if s.limited))
            )
        watched = _watched(stack, upstream, paced)
        print("bench: stack up: " + ", ".join(f"{w.name}={w.pid}" for w in watched), flush=True)
        monitor = stack.nats_monitor_port
        idle, idle_other = idle_cpu(watched, IDLE_WINDOW_S)
        real: dict[str, Any] = {}
        if "idle" in real_keys:
            real["idle"] = realistic.run_idle(watched, monitor, args.idle_seconds)
        runs = run_matrix(
            tools.wrk,
            upstream,
            stack.tail_url,
            api_key,
            watched,
            opts=opts,
            scenarios=scenarios,
            limited_key=limited_key,
            rounds=args.rounds,
        )
        ttft = run_ttft(upstream, stack.tail_url, api_key, watched, opts) if scenarios else None
        idle_rate = real["idle"]["ms_per_s"] if "idle" in real else idle
        setup = realistic.Setup(
            wrk=tools.wrk,
            upstream=upstream,
            paced=paced,
            tail_url=stack.tail_url,
            api_key=api_key,
            watched=watched,
            monitor_port=monitor,
            opts=opts,
        )
        real |= realistic.run_isolated(setup, idle_rate, real_keys)
        real |= realistic.run_loads(setup, real_keys)
        return report.build_document(
            meta=report.machine_info(),
            options=options,
            runs=runs,
            ttft=ttft,
            idle_ms_per_s=idle,
            idle_other_cores=idle_other,
            process_groups={w.name: w.group for w in watched},
            routing=routing_result,
            real=real,
        )
    finally:
        with _signals_ignored():
            if stack is not None:
                print("bench: stopping Switchyard ...", flush=True)
                stack.down()
            if upstream is not None:
                upstream.stop()
            if paced is not None:
                paced.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Explicit for SIGINT too: a shell may start background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    keep = args.keep
    try:
        doc = _benchmark(args, workdir)
    except KeyboardInterrupt:
        print("\nbench: interrupted; everything was stopped.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (MissingToolError, StackStartError, WrkError, RuntimeError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        print(f"bench: kept {workdir} for inspection (logs under home/logs/)", file=sys.stderr)
        keep = True
        return EXIT_SETUP
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.render_text(doc))
    json_path, md_path = report.save(_without_nan(doc), args.results_dir)
    print(f"saved {json_path} and {md_path}")
    if not doc["valid"]:
        print(f"bench: INVALID: {doc['errors']} requests failed", file=sys.stderr)
        return EXIT_INVALID
    if args.check and not doc["all_targets_pass"]:
        return EXIT_TARGETS
    return 0


def _without_nan(value: Any) -> Any:
    """JSON has no NaN: missing measurements become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nan(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
