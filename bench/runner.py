"""One measured run: warm-up, CPU snapshot, wrk, CPU snapshot; and the whole scenario matrix.

The warm-up fills connection pools, JIT-free Python caches and JetStream consumers so the
measured run sees steady state. CPU is read just before and just after the measured wrk run, so
warm-up work is not charged to it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import cpu
from bench.load import LoadSpec, WrkResult, run_wrk
from bench.scenarios import (
    DIALECT_PATHS,
    LIMITS_BASELINE,
    SCENARIOS,
    Scenario,
    direct_body,
    scenario,
    switchyard_body,
)
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
    samples: list[RunResult] = field(default_factory=list)  # when this is their median

    @property
    def noisy(self) -> bool:
        """Other work on the machine took a noticeable share of the CPUs during the run."""
        return self.background_cores > NOISY_CORES

    def to_json(self) -> dict[str, Any]:
        doc = {
            "wrk": self.wrk.to_json(),
            "warmup_errors": self.warmup_errors,
            "cpu_us_per_request": self.cpu_us,
            "cpu_us_per_request_by_group": self.cpu_groups,
            "background_cores": self.background_cores,
            "noisy": self.noisy,
        }
        if self.samples:
            doc["samples"] = [s.to_json() for s in self.samples]
        return doc


def median_run(samples: list[RunResult]) -> RunResult:
    """Repeated runs as one: CPU per process and group is the median; wrk numbers are those of
    the run with the median (lower middle) req/s, with the errors of every run."""
    if len(samples) == 1:
        return samples[0]
    mid = sorted(samples, key=lambda r: r.wrk.rps)[(len(samples) - 1) // 2]
    errors: dict[str, int] = {}
    for run in samples:
        for kind, count in run.wrk.errors.items():
            errors[kind] = errors.get(kind, 0) + count

    def median(values: list[dict[str, float]]) -> dict[str, float]:
        return {n: statistics.median(v.get(n, 0.0) for v in values) for n in values[0]}

    return RunResult(
        scenario=mid.scenario,
        target=mid.target,
        wrk=replace(mid.wrk, errors=errors),
        warmup_errors=sum(r.warmup_errors for r in samples),
        cpu_us=median([r.cpu_us for r in samples]),
        cpu_groups=median([r.cpu_groups for r in samples]),
        background_cores=max(r.background_cores for r in samples),
        samples=samples,
    )


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
    limited_key: str = "",
    rounds: int = 2,
) -> dict[str, dict[str, RunResult]]:
    """Every scenario, direct then via Switchyard; results by scenario key and target.

    A ``limited`` scenario has no direct run: ``rounds`` times, in ABBA order (against drift),
    its Switchyard run with ``limited_key`` and a ``baseline`` run of ``LIMITS_BASELINE`` with
    ``api_key``, back to back; each target is the median of its rounds.
    """
    results: dict[str, dict[str, RunResult]] = {}
    for sc in scenarios:
        if sc.limited:
            base = scenario(LIMITS_BASELINE)
            specs = {
                "baseline": _via(tail_url, base, api_key),
                "switchyard": _via(tail_url, sc, limited_key),
            }
            samples: dict[str, list[RunResult]] = {t: [] for t in specs}
            for i in range(rounds):
                for target in specs if i % 2 == 0 else reversed(specs):
                    samples[target].append(
                        _run(wrk, specs[target], watched, opts, sc=sc, target=target)
                    )
            results[sc.key] = {t: median_run(runs) for t, runs in samples.items()}
            continue
        specs = {
            "direct": LoadSpec(
                url=upstream.url(sc.route),
                body=direct_body(sc),
                connections=sc.connections,
                threads=sc.threads,
            ),
            "switchyard": _via(tail_url, sc, api_key),
        }
        results[sc.key] = {
            t: _run(wrk, spec, watched, opts, sc=sc, target=t) for t, spec in specs.items()
        }
    return results


def _via(tail_url: str, sc: Scenario, api_key: str) -> LoadSpec:
    return LoadSpec(
        url=tail_url.replace(DIALECT_PATHS["chat"], DIALECT_PATHS[sc.dialect]),
        body=switchyard_body(sc),
        connections=sc.connections,
        threads=sc.threads,
        api_key=api_key,
    )


def _run(
    wrk: Path,
    spec: LoadSpec,
    watched: list[cpu.Watched],
    opts: RunOptions,
    *,
    sc: Scenario,
    target: str,
) -> RunResult:
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
    return run


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
