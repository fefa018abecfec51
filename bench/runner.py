"""One measured run: warm-up, CPU snapshot, wrk, CPU snapshot; and the whole scenario matrix.

The warm-up fills connection pools, JIT-free Python caches and JetStream consumers so the
measured run sees steady state. CPU is read just before and just after the measured wrk run, so
warm-up work is not charged to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cpu
from bench.load import LoadSpec, WrkResult, run_wrk
from bench.scenarios import SCENARIOS, Scenario, direct_body, switchyard_body
from bench.ttft import measure_ttft
from bench.upstream import Upstream

SETTLE_S = 0.3  # let the warm-up's last requests finish before the first CPU snapshot
# Cores used by unrelated processes during a run above which the run is flagged as disturbed.
NOISY_CORES = 0.25


@dataclass(frozen=True)
class RunOptions:
    """How long and how hard to run."""

    duration_s: float
    warmup_s: float
    wrk_timeout_s: float
    ttft_requests: int
    quiet_wait_s: float = 0.0


@dataclass
class RunResult:
    """One measured wrk run and the CPU each watched process spent per completed request."""

    scenario: str
    target: str
    wrk: WrkResult
    warmup_errors: int
    cpu_us: dict[str, float]
    cpu_groups: dict[str, float]
    background_cores: float

    @property
    def noisy(self) -> bool:
        """Other work on the machine took a noticeable share of the CPUs during the run."""
        return self.background_cores > NOISY_CORES

    def to_json(self) -> dict[str, Any]:
        return {
            "wrk": self.wrk.to_json(),
            "warmup_errors": self.warmup_errors,
            "cpu_us_per_request": self.cpu_us,
            "cpu_us_per_request_by_group": self.cpu_groups,
            "background_cores": self.background_cores,
            "noisy": self.noisy,
        }


def measure(
    wrk: Path, spec: LoadSpec, watched: list[cpu.Watched], opts: RunOptions, label: str
) -> RunResult:
    """Warm up, then run wrk for the measured duration with CPU snapshots around it."""
    wait_for_quiet(watched, opts.quiet_wait_s)
    warm = (
        run_wrk(wrk, spec, opts.warmup_s, timeout_s=opts.wrk_timeout_s) if opts.warmup_s else None
    )
    time.sleep(SETTLE_S)
    before, t0 = cpu.snapshot(watched), time.monotonic()
    result = run_wrk(wrk, spec, opts.duration_s, timeout_s=opts.wrk_timeout_s)
    after, elapsed = cpu.snapshot(watched), time.monotonic() - t0
    per_process = cpu.per_request_us(before, after, result.requests)
    scenario, _, target = label.partition("/")
    return RunResult(
        scenario=scenario,
        target=target,
        wrk=result,
        warmup_errors=warm.error_count if warm else 0,
        cpu_us=per_process,
        cpu_groups=cpu.by_group(per_process, watched),
        background_cores=cpu.other_cores(before, after, elapsed),
    )


def wait_for_quiet(watched: list[cpu.Watched], max_wait_s: float, window_s: float = 0.5) -> float:
    """Wait (at most ``max_wait_s``) until unrelated processes leave the CPUs mostly idle.

    On a shared machine another workload (a test suite, a build) distorts every number; waiting
    for a quiet moment is cheap (one short window when the machine is idle). Returns the other
    load of the last window, in cores.
    """
    deadline = time.monotonic() + max_wait_s
    other = 0.0
    while max_wait_s > 0:
        before = cpu.snapshot(watched)
        time.sleep(window_s)
        other = cpu.other_cores(before, cpu.snapshot(watched), window_s)
        if other <= NOISY_CORES or time.monotonic() >= deadline:
            break
    return other


def idle_cpu(watched: list[cpu.Watched], seconds: float) -> tuple[dict[str, float], float]:
    """CPU of each process with no traffic (ms of CPU per second), and other load (cores)."""
    before = cpu.snapshot(watched)
    time.sleep(seconds)
    after = cpu.snapshot(watched)
    cores = cpu.busy_cores(before, after, seconds)
    return {n: c * 1000 for n, c in cores.items()}, cpu.other_cores(before, after, seconds)


def run_matrix(
    wrk: Path,
    upstream: Upstream,
    tail_url: str,
    api_key: str,
    watched: list[cpu.Watched],
    *,
    opts: RunOptions,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
) -> dict[str, dict[str, RunResult]]:
    """Every scenario, direct then via Switchyard; results by scenario key and target."""
    results: dict[str, dict[str, RunResult]] = {}
    for sc in scenarios:
        pair: dict[str, RunResult] = {}
        specs = {
            "direct": LoadSpec(
                url=upstream.url(sc.route),
                body=direct_body(sc),
                connections=sc.connections,
                threads=sc.threads,
            ),
            "switchyard": LoadSpec(
                url=tail_url,
                body=switchyard_body(sc),
                connections=sc.connections,
                threads=sc.threads,
                api_key=api_key,
            ),
        }
        for target, spec in specs.items():
            print(f"bench: {sc.key:<14} {target:<10} c={sc.connections:<3} ...", end="", flush=True)
            run = measure(wrk, spec, watched, opts, f"{sc.key}/{target}")
            flag = f"  ERRORS: {run.wrk.error_count}" if run.wrk.error_count else ""
            if run.noisy:
                flag += f"  (other load on the machine: {run.background_cores:.2f} cores)"
            print(
                f" {run.wrk.rps:9.0f} req/s  p50 {run.wrk.latency_us['p50'] / 1000:7.3f} ms"
                f"  p99 {run.wrk.latency_us['p99'] / 1000:7.3f} ms{flag}",
                flush=True,
            )
            pair[target] = run
        results[sc.key] = pair
    return results


def run_ttft(
    upstream: Upstream, tail_url: str, api_key: str, watched: list[cpu.Watched], opts: RunOptions
) -> dict[str, Any]:
    """TTFT at concurrency 1, direct vs via Switchyard, on the streaming route."""
    sc = next(s for s in SCENARIOS if s.stream)
    requests = opts.ttft_requests
    wait_for_quiet(watched, opts.quiet_wait_s)
    before, t0 = cpu.snapshot(watched), time.monotonic()
    print(
        f"bench: ttft           {requests} sequential streamed requests per target ...", flush=True
    )
    series = measure_ttft(
        upstream.url(sc.route),
        direct_body(sc).encode(),
        tail_url,
        switchyard_body(sc).encode(),
        api_key,
        requests=requests,
    )
    other = cpu.other_cores(before, cpu.snapshot(watched), time.monotonic() - t0)
    doc: dict[str, Any] = {name: s.summary() for name, s in series.items()}
    doc["background_cores"] = other
    doc["added_p50_ms"] = doc["switchyard"]["ttft_p50_ms"] - doc["direct"]["ttft_p50_ms"]
    return doc
