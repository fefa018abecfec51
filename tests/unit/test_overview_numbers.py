"""The Overview's numbers (what `switchyard top` and the admin UI show) against known traffic.

* Rates: a steady 5 requests/s read 4.5 whenever the overview was taken before the second under
  way had its report (the 10 s window counted that second but divided by 10 whole ones).
  Whatever the phase of the reports and of the reading within the second, a steady rate reads
  true, on a deployment's row, in the totals from the edges, and in every share.
* Percentiles: the upper bound of a x1.5 bucket read requests of 205-215 ms as 292 ms. They are
  now placed within the bucket as Prometheus' ``histogram_quantile`` does (checked against
  promtool's own evaluation when it is installed), so `top` and Grafana agree.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
import yaml

from switchyard.config import load_settings
from switchyard.control.monitor import Monitor
from switchyard.runtime.cooldowns import Cooldowns
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.monitor import (
    LATENCY_BUCKETS_MS,
    Heartbeat,
    Overview,
    TrafficReport,
    TrafficSample,
    bucket_of,
    percentile,
)
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    Route,
    RouteTable,
    decode_route_table,
    deployment_id,
)

pytestmark = pytest.mark.unit

T0 = 1_800_000_000  # a whole second
DEP = deployment_id("p", "m")
PHASES = [i / 20 for i in range(20)]  # 0, 0.05 ... 0.95 s into a second
PROMTOOL = shutil.which("promtool")


def _counts(latencies_ms: list[float]) -> list[int]:
    counts = [0] * len(LATENCY_BUCKETS_MS)
    for ms in latencies_ms:
        counts[bucket_of(ms)] += 1
    return counts


def _monitor() -> Monitor:
    provider = Provider(kind="openai-compatible", api_base="http://p.test/v1")
    table = decode_route_table(
        msgspec.json.encode(
            RouteTable(
                providers={"p": provider},
                routes={"m": Route(deployments=(Deployment(provider="p", model="m"),))},
            )
        )
    )
    settings = load_settings(None, env={})
    return Monitor(None, settings, Metrics("control"), lambda: table, Cooldowns())  # type: ignore[arg-type]


def _steady_proxy(report_phase: float, read_phase: float) -> Overview:
    """The overview read ``read_phase`` into a second, 30 s into a steady 5 requests/s (one
    of them failed) and 90 tokens/s, which a model-proxy reports each second ``report_phase``
    into it (the reports sent by then only)."""
    monitor = _monitor()
    now = T0 + 30 + read_phase
    at = T0 + report_phase
    while at <= now:
        sample = TrafficSample(
            deployment=DEP,
            requests=5,
            errors=1,
            latency=_counts([210.0] * 5),
            ttft=_counts([40.0] * 5),
            input_tokens=40,
            output_tokens=50,
        )
        monitor.add_traffic(TrafficReport(instance="mp-1", at=at, seconds=1.0, samples=[sample]))
        at += 1
    return monitor.overview(now)


@pytest.mark.parametrize("report_phase", [0.02, 0.45, 0.97])
def test_a_steady_rate_reads_true_whenever_the_overview_is_taken(report_phase: float) -> None:
    for read_phase in PHASES:
        overview = _steady_proxy(report_phase, read_phase)
        [row] = overview.deployments
        for rates in (row.rates, overview.totals):
            got = (rates.requests_per_s, rates.tokens_per_s, rates.error_ratio)
            assert got == (5.0, 90.0, 0.2), (report_phase, read_phase, rates)


def _steady_edges(beat_phase: float, read_phase: float) -> Overview:
    """Two edges answering a steady 3 requests/s each, one of them a 429 on the tail and a
    5xx on the gateway, each beating every second ``beat_phase`` into it (the gateway 0.3 s
    later), read ``read_phase`` into a second."""
    monitor = _monitor()
    now = T0 + 30 + read_phase
    at, n = T0 + beat_phase, 0
    while at <= now:
        tail = {"2xx": 2 * n, "429": n}
        gateway = {"2xx": 2 * n, "5xx": n}
        monitor.add_heartbeat(Heartbeat(component="tail", instance="t", pid=1, requests=tail), at)
        beat = Heartbeat(component="gateway", instance="g", pid=2, requests=gateway)
        monitor.add_heartbeat(beat, at + 0.3)
        at, n = at + 1, n + 1
    return monitor.overview(now)


@pytest.mark.parametrize("beat_phase", [0.1, 0.6])
def test_the_edges_totals_and_shares_read_true_whenever_the_overview_is_taken(
    beat_phase: float,
) -> None:
    for read_phase in PHASES:
        totals = _steady_edges(beat_phase, read_phase).totals
        got = (totals.requests_per_s, totals.refused_ratio, totals.error_ratio)
        assert got == (6.0, 0.1667, 0.1667), (beat_phase, read_phase, totals)


def test_the_mean_latency_the_feeder_reads_comes_from_the_same_whole_seconds() -> None:
    monitor = _monitor()
    monitor.add_traffic(
        TrafficReport(
            instance="mp-1",
            at=T0 + 0.5,
            seconds=1.0,
            samples=[
                TrafficSample(
                    deployment=DEP,
                    requests=1,
                    errors=0,
                    latency=_counts([210.0]),
                    ttft=_counts([]),
                    input_tokens=0,
                    output_tokens=0,
                )
            ],
        )
    )
    assert monitor.mean_latency_s(DEP, now=T0 + 0.9) is None  # its second is not over
    assert monitor.mean_latency_s(DEP, now=T0 + 1.5) is not None


# ---- percentiles ----


def test_percentiles_are_placed_within_their_bucket_not_at_its_upper_bound() -> None:
    # 1000 requests spread evenly over 100-300 ms: the median is 200 ms. The bucket holding it
    # is (194.6, 291.9]; its upper bound said 292.
    spread = _counts([100 + i * 0.2 for i in range(1000)])
    assert percentile(spread, 0.5) == pytest.approx(200.0, abs=0.05)
    # Every request 205-215 ms (the explorer's whole requests): all in that one bucket, so
    # the median is its middle (243 ms), the p99 near its top; Prometheus says the same.
    narrow = _counts([205 + i / 10 for i in range(101)])
    assert percentile(narrow, 0.5) == pytest.approx(194.6 + 97.3 * 0.5)
    assert percentile(narrow, 0.99) == pytest.approx(194.6 + 97.3 * 0.99)
    # The first bucket starts at 0 ms.
    assert percentile(_counts([0.5] * 4), 0.5) == pytest.approx(0.5)
    assert percentile([0] * len(LATENCY_BUCKETS_MS), 0.5) is None


def test_the_overview_shows_the_interpolated_percentiles_to_a_tenth_of_a_millisecond() -> None:
    row = _steady_proxy(0.5, 0.9).deployments[0].rates
    assert (row.p50_ms, row.p99_ms) == (243.2, 290.9)  # 194.6 + 97.3 x 0.5 / 0.99
    assert (row.ttft_p50_ms, row.ttft_p99_ms) == (48.0, 57.5)  # 40 ms: in (38.4, 57.7]


CASES: dict[str, list[float]] = {
    "spread": [100 + i * 0.2 for i in range(1000)],
    "narrow": [205 + i / 10 for i in range(101)],
    "mixed": [0.4] * 3 + [3.0] * 40 + [250.0] * 50 + [1900.0] * 6 + [600_000.0],
}
QUANTILES = (0.25, 0.5, 0.9, 0.99)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_percentiles_are_what_histogram_quantile_gives_for_the_same_buckets(
    tmp_path: Path,
) -> None:
    """promtool evaluates ``histogram_quantile`` over the same buckets (cumulative, as
    Prometheus stores them): each of ours must be its answer."""
    assert PROMTOOL is not None
    series, checks = [], []
    for case, samples in CASES.items():
        counts, total = _counts(samples), 0
        for bound, count in zip(LATENCY_BUCKETS_MS, counts, strict=True):
            total += count
            series.append(
                {"series": f'lat_bucket{{case="{case}",le="{bound!r}"}}', "values": f"{total}x2"}
            )
        series.append({"series": f'lat_bucket{{case="{case}",le="+Inf"}}', "values": f"{total}x2"})
        for q in QUANTILES:
            ours = percentile(counts, q)
            assert ours is not None
            checks.append(
                {
                    "expr": f'abs(histogram_quantile({q}, lat_bucket{{case="{case}"}}) - {ours!r})'
                    " < bool 1e-6",
                    "eval_time": "1m",
                    "exp_samples": [{"labels": f'{{case="{case}"}}', "value": 1}],
                }
            )
    spec = {
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}],
    }
    path = tmp_path / "quantiles.yml"
    path.write_text(yaml.safe_dump(spec))
    run = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
