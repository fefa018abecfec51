"""Turn raw measurements into verdicts, a console table, JSON and a markdown summary.

Targets compare Switchyard against the direct baseline measured in the same run, so machine speed
mostly cancels out. A run that saw any non-2xx answer or socket error is flagged everywhere:
throughput of failures is not throughput.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.realistic import stream_model
from bench.routing import TARGET_SHARE_PCT
from bench.runner import NOISY_CORES, RunResult
from bench.scenarios import LIMITS_BASELINE, SCENARIOS

RESULTS_DIR = Path(__file__).parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_GROUPS = ("switchyard", "nats-server")
LIMITS_PROCESSES = ("tail", "valkey")  # where a key's limits cost CPU (admission + settle)
LIMITS_TARGET_US = 150.0
PROCESS_ORDER = (
    "tail",
    "gateway",
    "head",
    "modelproxy",
    "secrets",
    "supervisor",
    "nats-server",
    "openbao",
    "valkey",
    "nginx",
)


@dataclass(frozen=True)
class Target:
    """One goal and whether this run met it."""

    name: str
    value: float | None  # None: not measured in this run (e.g. --ttft-requests 0)
    limit: float
    unit: str
    higher_is_better: bool
    valid: bool

    @property
    def passed(self) -> bool:
        if not self.valid or self.value is None or math.isnan(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def verdict(self) -> str:
        if not self.valid:
            return "INVALID (errors)"
        if self.value is None:
            return "not run"
        return "PASS" if self.passed else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "comparison": ">=" if self.higher_is_better else "<=",
            "valid": self.valid,
            "pass": self.passed,
        }


# ---- machine and code identity ----


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit or "unknown",
        "git_dirty": dirty,
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# ---- assembling the results document ----


def _ms(us: float) -> float:
    return us / 1000.0


def _pair_doc(pair: dict[str, RunResult]) -> dict[str, Any]:
    """Direct vs Switchyard; a limited scenario has no direct run but a ``baseline`` one."""
    via, direct = pair["switchyard"], pair.get("direct")
    doc: dict[str, Any] = {
        "direct": direct.to_json() if direct else None,
        "switchyard": via.to_json(),
        "added_p50_ms": math.nan,
        "added_p99_ms": math.nan,
        "rps_ratio": math.nan,
        "switchyard_cpu_us_per_request": sum(via.cpu_groups.get(g, 0.0) for g in TARGET_GROUPS),
        "errors": sum(run.wrk.error_count for run in pair.values()),
    }
    if direct is not None:
        doc["added_p50_ms"] = _ms(via.wrk.latency_us["p50"] - direct.wrk.latency_us["p50"])
        doc["added_p99_ms"] = _ms(via.wrk.latency_us["p99"] - direct.wrk.latency_us["p99"])
        doc["rps_ratio"] = via.wrk.rps / direct.wrk.rps if direct.wrk.rps else 0.0
    if "baseline" in pair:
        doc["baseline"] = pair["baseline"].to_json()
    return doc


def _groups(run: dict[str, Any], names: tuple[str, ...]) -> float:
    """Sum of a run document's CPU us per request over some process groups."""
    return float(sum(run["cpu_us_per_request_by_group"].get(g, 0.0) for g in names))


def limits_doc(runs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """CPU per request with a limited key minus with the demo key (both via Switchyard)."""
    key = next((k for k, r in runs.items() if r.get("baseline")), None)
    if key is None:
        return None
    base, lim = runs[key]["baseline"], runs[key]["switchyard"]
    names = {*base["cpu_us_per_request"], *lim["cpu_us_per_request"]}
    delta = {
        n: lim["cpu_us_per_request"].get(n, 0.0) - base["cpu_us_per_request"].get(n, 0.0)
        for n in sorted(names, key=_order_key)
    }
    with_valkey = (*TARGET_GROUPS, "valkey")
    return {
        "scenario": key,
        "baseline_scenario": LIMITS_BASELINE,
        "rounds": len(lim.get("samples", [])) or 1,
        "errors": runs[key]["errors"],
        "delta_us_per_request": delta,
        "tail_valkey_delta_us": sum(delta.get(n, 0.0) for n in LIMITS_PROCESSES),
        "total_delta_us": _groups(lim, TARGET_GROUPS) - _groups(base, TARGET_GROUPS),
        "total_with_valkey_delta_us": _groups(lim, with_valkey) - _groups(base, with_valkey),
    }


def routing_doc(
    routing: dict[str, Any] | None,
    runs: dict[str, dict[str, Any]],
    limits: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Routing ns per call, and its share of the pipeline's CPU per request when measured."""
    if routing is None:
        return None
    pipeline = runs.get(LIMITS_BASELINE)
    us = pipeline["switchyard_cpu_us_per_request"] if pipeline else None
    if pipeline is None and limits is not None:  # its paired baseline runs
        pipeline = runs[limits["scenario"]]
        us = _groups(pipeline["baseline"], TARGET_GROUPS)
    pct = routing["ns_per_call"] / 1000 / us * 100 if us else None
    return {
        **routing,
        "pipeline_cpu_us_per_request": us,
        "share_pct": pct,
        "pipeline_errors": pipeline["errors"] if pipeline else 0,
    }


# Issue 14 (real traffic) goals.
ISOLATED_CPU_US = 2500.0
ISOLATED_ADDED_MS = 2.5
CHUNK_CPU_US = 40.0
GAP_P99_MS = 5.0
TTFT_P99_MS = 10.0
IDLE_PCT = 1.5
# "The existing rows no worse" than the run issue 14 started from (README, 2026-11-27).
BASELINE_C64_CPU_US = 716.0
BASELINE_C1_ADDED_MS = 1.5


def real_targets(real: dict[str, Any], runs: dict[str, dict[str, Any]]) -> list[Target]:
    """The goals of issue 14, for the rows of this run that measure them."""
    out = []
    if "isolated50" in real:
        r = real["isolated50"]
        ok = r["errors"] == 0
        out.append(
            Target(
                "Isolated request, 50 ms upstream: CPU per request (Switchyard + nats-server)",
                r["cpu_us_per_request"],
                ISOLATED_CPU_US,
                "us",
                higher_is_better=False,
                valid=ok,
            )
        )
        out.append(
            Target(
                "Isolated request, 50 ms upstream: added p50",
                r["added_p50_ms"],
                ISOLATED_ADDED_MS,
                "ms",
                higher_is_better=False,
                valid=ok,
            )
        )
    for key in ("streams200", "streams1000"):
        if key not in real:
            continue
        r = real[key]
        c = r["classes"]["streams"]
        ok = r["errors"] == 0
        for name, value, limit in (
            ("CPU per streamed chunk (all-in)", r["cpu_us_per_chunk"], CHUNK_CPU_US),
            ("gap distortion p99", c["gap_distortion_ms_switchyard"][1], GAP_P99_MS),
            ("added TTFT p99", c["added_ttft_p99_ms"], TTFT_P99_MS),
        ):
            unit = "us" if name.startswith("CPU") else "ms"
            out.append(
                Target(f"{key}: {name}", value, limit, unit, higher_is_better=False, valid=ok)
            )
    if "idle" in real:
        out.append(
            Target(
                "Idle stack (Switchyard, nats-server, OpenBao, Valkey), % of one core",
                real["idle"]["stack_pct"],
                IDLE_PCT,
                "%",
                higher_is_better=False,
                valid=True,
            )
        )
    if "nonstream_c64" in runs:
        r = runs["nonstream_c64"]
        out.append(
            Target(
                "No worse: CPU per request, c=64",
                r["switchyard_cpu_us_per_request"],
                BASELINE_C64_CPU_US,
                "us",
                higher_is_better=False,
                valid=r["errors"] == 0,
            )
        )
    if "nonstream_c1" in runs:
        r = runs["nonstream_c1"]
        out.append(
            Target(
                "No worse: added p50, c=1",
                r["added_p50_ms"],
                BASELINE_C1_ADDED_MS,
                "ms",
                higher_is_better=False,
                valid=r["errors"] == 0,
            )
        )
    return out


def build_targets(
    runs: dict[str, dict[str, Any]],
    ttft: dict[str, Any] | None,
    limits: dict[str, Any] | None = None,
    routing: dict[str, Any] | None = None,
) -> list[Target]:
    out = []
    if "nonstream_c64" in runs:
        r = runs["nonstream_c64"]
        out.append(
            Target(
                "CPU per non-streaming request (Switchyard + nats-server), c=64",
                r["switchyard_cpu_us_per_request"],
                1000.0,
                "us",
                higher_is_better=False,
                valid=r["errors"] == 0,
            )
        )
    if "nonstream_c1" in runs:
        r = runs["nonstream_c1"]
        out.append(
            Target(
                "Added p50 latency, non-streaming, c=1",
                r["added_p50_ms"],
                1.0,
                "ms",
                higher_is_better=False,
                valid=r["errors"] == 0,
            )
        )
    if ttft is not None:
        out.append(
            Target(
                "Added TTFT p50, streaming, c=1",
                ttft["added_p50_ms"],
                1.0,
                "ms",
                higher_is_better=False,
                valid=ttft["direct"]["errors"] + ttft["switchyard"]["errors"] == 0,
            )
        )
    if "delay50_c64" in runs:
        r = runs["delay50_c64"]
        out.append(
            Target(
                "50 ms upstream, 64 clients: Switchyard RPS / direct RPS",
                r["rps_ratio"] * 100,
                95.0,
                "%",
                higher_is_better=True,
                valid=r["errors"] == 0,
            )
        )
    chat = runs.get("nonstream_c64")
    for key, name in (("responses_c64", "Responses API"), ("messages_c64", "Anthropic Messages")):
        if chat is None or key not in runs:
            continue
        r = runs[key]
        out.append(
            Target(
                f"{name} (translated) CPU per request vs chat completions, c=64",
                100.0 * r["switchyard_cpu_us_per_request"] / chat["switchyard_cpu_us_per_request"],
                110.0,
                "%",
                higher_is_better=False,
                valid=r["errors"] == 0 and chat["errors"] == 0,
            )
        )
    if limits is not None:
        out.append(
            Target(
                f"Auth + limits CPU per request <= {LIMITS_TARGET_US:g} us"
                " (tail + valkey, limited - demo key)",
                limits["tail_valkey_delta_us"],
                LIMITS_TARGET_US,
                "us",
                higher_is_better=False,
                valid=limits["errors"] == 0,
            )
        )
    if routing is not None and routing["share_pct"] is not None:
        out.append(
            Target(
                f"Routing share of pipeline CPU <= {TARGET_SHARE_PCT:g}%"
                " (decide.choose / nonstream_c64 CPU)",
                routing["share_pct"],
                TARGET_SHARE_PCT,
                "%",
                higher_is_better=False,
                valid=routing["pipeline_errors"] == 0,
            )
        )
    return out


def build_document(
    *,
    meta: dict[str, Any],
    options: dict[str, Any],
    runs: dict[str, dict[str, RunResult]],
    ttft: dict[str, Any] | None,
    idle_ms_per_s: dict[str, float],
    idle_other_cores: float,
    process_groups: dict[str, str],
    routing: dict[str, Any] | None = None,
    real: dict[str, Any] | None = None,
) -> dict[str, Any]:
    real = real or {}
    run_docs = {key: _pair_doc(pair) for key, pair in runs.items()}
    limits = limits_doc(run_docs)
    routing_result = routing_doc(routing, run_docs, limits)
    targets = build_targets(run_docs, ttft, limits, routing_result)
    targets += real_targets(real, run_docs)
    errors = sum(r["errors"] for r in run_docs.values())
    errors += sum(r["errors"] for r in real.values())
    if ttft is not None:
        errors += ttft["direct"]["errors"] + ttft["switchyard"]["errors"]
    warmup_errors = sum(run.warmup_errors for pair in runs.values() for run in pair.values())
    return {
        "meta": meta,
        "options": options,
        "valid": errors == 0,
        "errors": errors,
        "warmup_errors": warmup_errors,
        "scenarios": {
            sc.key: {
                "label": sc.label,
                "route": sc.route,
                "stream": sc.stream,
                "connections": sc.connections,
                "threads": sc.threads,
                "limited": sc.limited,
            }
            for sc in SCENARIOS
            if sc.key in runs
        },
        "runs": run_docs,
        "limits": limits,
        "routing": routing_result,
        "real": real,
        "stream_model": stream_model(real),
        "ttft": ttft,
        "idle_cpu_ms_per_s": idle_ms_per_s,
        "idle_other_cores": idle_other_cores,
        "noisy_runs": [
            f"{key}/{target}"
            for key, pair in runs.items()
            for target, run in pair.items()
            if run.noisy
        ]
        + (["ttft"] if ttft and ttft["background_cores"] > NOISY_CORES else [])
        + [
            f"{key}/{target}"
            for key, r in real.items()
            for target in ("direct", "switchyard")
            if r.get(target) and r[target]["background_cores"] > NOISY_CORES
        ],
        "process_groups": process_groups,
        "targets": [t.to_json() for t in targets],
        "all_targets_pass": all(t.passed for t in targets),
    }


# ---- rendering ----


def _order_key(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(PROCESS_ORDER):
        if name == prefix or name.startswith(prefix + "-"):
            return i, name
    return len(PROCESS_ORDER), name


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _main_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "scenario",
        "c",
        "direct req/s",
        "p50 ms",
        "p99 ms",
        "switchyard req/s",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "rps %",
        "CPU us/req",
        "other load",
        "errors",
    ]
    rows = []
    for key, r in doc["runs"].items():
        sc = doc["scenarios"][key]
        s = r["switchyard"]["wrk"]
        d = r["direct"]["wrk"] if r["direct"] else None
        errs = (
            f"{_errs(d)} / {_errs(s)}"
            if d
            else f"{_errs(s)} + baseline {_errs(r['baseline']['wrk'])}"
        )
        direct = (
            [
                f"{d['rps']:.0f}",
                _fmt(_ms(d["latency_us"]["p50"])),
                _fmt(_ms(d["latency_us"]["p99"])),
            ]
            if d
            else ["-", "-", "-"]
        )
        rows.append(
            [
                sc["label"],
                str(sc["connections"]),
                *direct,
                f"{s['rps']:.0f}",
                _fmt(_ms(s["latency_us"]["p50"])),
                _fmt(_ms(s["latency_us"]["p99"])),
                _fmt(r["added_p50_ms"]),
                _fmt(None if r["rps_ratio"] is None else r["rps_ratio"] * 100, 1),
                f"{r['switchyard_cpu_us_per_request']:.0f}",
                f"{max(run['background_cores'] for run in _runs_of(r)):.2f}",
                errs if r["errors"] else "0",
            ]
        )
    return headers, rows


def _errs(wrk: dict[str, Any]) -> str:
    return f"{wrk['non_2xx']}+{wrk['socket_errors']}"


def _runs_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [r[t] for t in ("direct", "switchyard", "baseline") if r.get(t)]


def _cpu_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    keys = list(doc["runs"])
    headers = ["process (us CPU / request)", *keys, "idle ms/s"]
    names = sorted(
        {n for r in doc["runs"].values() for n in r["switchyard"]["cpu_us_per_request"]},
        key=_order_key,
    )
    rows = []
    for name in names:
        row = [name]
        row += [
            f"{doc['runs'][k]['switchyard']['cpu_us_per_request'].get(name, 0.0):.0f}" for k in keys
        ]
        row.append(f"{doc['idle_cpu_ms_per_s'].get(name, 0.0):.1f}")
        rows.append(row)
    for group in ("switchyard", "nats-server", "openbao", "valkey", "nginx"):
        row = [f"= {group} total"]
        row += [
            f"{doc['runs'][k]['switchyard']['cpu_us_per_request_by_group'].get(group, 0.0):.0f}"
            for k in keys
        ]
        idle = sum(
            v for n, v in doc["idle_cpu_ms_per_s"].items() if doc["process_groups"].get(n) == group
        )
        row.append(f"{idle:.1f}")
        rows.append(row)
    total = ["= switchyard + nats-server"]
    total += [f"{doc['runs'][k]['switchyard_cpu_us_per_request']:.0f}" for k in keys]
    total.append("")
    rows.append(total)
    nginx_direct = ["nginx, direct run"]
    nginx_direct += [
        f"{d['cpu_us_per_request_by_group'].get('nginx', 0.0):.0f}"
        if (d := doc["runs"][k]["direct"])
        else "-"
        for k in keys
    ]
    nginx_direct.append("")
    rows.append(nginx_direct)
    wrk_row = ["wrk (load generator)"]
    wrk_row += [
        f"{doc['runs'][k]['switchyard']['wrk']['wrk_cpu_us_per_request']:.0f}" for k in keys
    ]
    wrk_row.append("")
    rows.append(wrk_row)
    return headers, rows


def _ttft_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    t = doc["ttft"]
    headers = ["TTFT, c=1 (ms)", "p50", "p90", "p99", "mean", "full stream p50", "n", "errors"]
    rows = [
        [
            name,
            _fmt(t[name]["ttft_p50_ms"]),
            _fmt(t[name]["ttft_p90_ms"]),
            _fmt(t[name]["ttft_p99_ms"]),
            _fmt(t[name]["ttft_mean_ms"]),
            _fmt(t[name]["total_p50_ms"]),
            str(t[name]["count"]),
            str(t[name]["errors"]),
        ]
        for name in ("direct", "switchyard")
    ]
    rows.append(["added (p50)", _fmt(t["added_p50_ms"]), "", "", "", "", "", ""])
    return headers, rows


def _limits_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    lim = doc["limits"]
    r = doc["runs"][lim["scenario"]]
    base, via = r["baseline"], r["switchyard"]
    headers = [
        "auth + limits (us CPU / request)",
        f"demo key ({lim['baseline_scenario']})",
        "key with limits",
        "delta",
    ]
    rows = [
        [
            name,
            f"{base['cpu_us_per_request'].get(name, 0.0):.1f}",
            f"{via['cpu_us_per_request'].get(name, 0.0):.1f}",
            f"{lim['delta_us_per_request'][name]:+.1f}",
        ]
        for name in sorted(lim["delta_us_per_request"], key=_order_key)
    ]
    for label, names in (
        ("= tail + valkey", None),
        ("= switchyard + nats-server", TARGET_GROUPS),
        ("= switchyard + nats-server + valkey", (*TARGET_GROUPS, "valkey")),
    ):
        if names is None:
            b = sum(base["cpu_us_per_request"].get(n, 0.0) for n in LIMITS_PROCESSES)
            v = sum(via["cpu_us_per_request"].get(n, 0.0) for n in LIMITS_PROCESSES)
        else:
            b, v = _groups(base, names), _groups(via, names)
        rows.append([label, f"{b:.1f}", f"{v:.1f}", f"{v - b:+.1f}"])
    rows.append(["req/s", f"{base['wrk']['rps']:.0f}", f"{via['wrk']['rps']:.0f}", ""])
    return headers, rows


def _routing_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    r = doc["routing"]
    pipeline = r["pipeline_cpu_us_per_request"]
    headers = ["routing (in process, CPU)", "value"]
    rows = [
        [
            f"decide.choose, ns per call (best of {r['repeats']} x {r['calls']})",
            f"{r['ns_per_call']:.0f}",
        ],
        ["Router(table) build, us (route changes only)", f"{r['router_build_us']:.1f}"],
        [
            "table: aliases / deployments / cooling",
            f"{r['aliases']} / {r['deployments']} / {r['cooling']}",
        ],
        ["pipeline CPU us/request (nonstream_c64)", _fmt(pipeline, 0)],
        ["routing share of pipeline CPU, %", _fmt(r["share_pct"], 2)],
    ]
    return headers, rows


def _target_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["target", "value", "goal", "result"]
    rows = []
    for t in doc["targets"]:
        target = Target(
            t["name"], t["value"], t["limit"], t["unit"], t["comparison"] == ">=", t["valid"]
        )
        rows.append(
            [
                t["name"],
                f"{_fmt(t['value'], {'ms': 3, '%': 2}.get(t['unit'], 1))} {t['unit']}",
                f"{t['comparison']} {t['limit']:g} {t['unit']}",
                target.verdict,
            ]
        )
    return headers, rows


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = "|" + "|".join([":---", *["---:"] * (len(headers) - 1)]) + "|"
    return "\n".join([line(headers), align, *(line(r) for r in rows)])


def _header_lines(doc: dict[str, Any]) -> list[str]:
    m, o = doc["meta"], doc["options"]
    dirty = " (uncommitted changes)" if m["git_dirty"] else ""
    return [
        f"date {m['date']}  commit {m['git_commit'][:12]}{dirty}",
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}",
        f"runs: {o['duration_s']:g} s measured after {o['warmup_s']:g} s warm-up each; "
        f"stack: {o['heads']} heads, {o['modelproxies']} model-proxies; "
        f"TTFT: {o['ttft_requests']} requests per target",
        f"unrelated load on the machine while idle before the runs: {doc['idle_other_cores']:.2f} "
        "cores",
    ]


def _error_banner(doc: dict[str, Any]) -> list[str]:
    lines = []
    if doc["errors"]:
        lines += [
            "!" * 78,
            f"!!! INVALID RUN: {doc['errors']} failed requests (non-2xx or socket errors).",
            "!!! Numbers below include failures and are NOT meaningful. See the errors column.",
            "!" * 78,
        ]
    if doc["warmup_errors"]:
        lines.append(f"warning: {doc['warmup_errors']} failed requests during warm-up runs")
    noisy = doc["noisy_runs"]
    if noisy:
        total = sum(len(_runs_of(r)) for r in doc["runs"].values()) + (1 if doc["ttft"] else 0)
        which = "every run" if len(noisy) == total else ", ".join(noisy)
        lines.append(
            f"warning: other processes used the CPUs during {which} (see 'other load'); "
            "those numbers are disturbed, rerun on a quiet machine"
        )
    return lines


MAIN_NOTE = (
    "`CPU us/req`: CPU time of every Switchyard process plus nats-server, per completed "
    "request, during the Switchyard run. `other load`: cores used by unrelated processes "
    "during the runs (max of them). `errors`: non-2xx+socket errors, direct / switchyard. "
    "A key-with-limits row has no direct run; its numbers are medians of its rounds."
)
LIMITS_NOTE = (
    "Both columns via Switchyard, same body, route and wrk settings, run back to back in "
    "alternating rounds; each is the median of its rounds. Only the key differs: the demo key "
    "has no limits (never touches Valkey); the other has every limit set, never refusing."
)
ROUTING_NOTE = (
    "CPU of one in-process routing decision on a 20-alias table (bench/routing.py), "
    "relative to the Switchyard + nats-server CPU per request of nonstream_c64."
)
Table = tuple[list[str], list[list[str]]]


def _stack_wakeups(w: dict[str, Any], groups: tuple[str, ...] = TARGET_GROUPS) -> float:
    from bench.cpu import group_of  # noqa: PLC0415

    return float(sum(v for n, v in w["wakeups"].items() if group_of(n) in groups))


def _isolated_rows(doc: dict[str, Any]) -> Table:
    headers = [
        "isolated (1 client)",
        "direct p50 ms",
        "switchyard p50 ms",
        "added p50 ms",
        "added p99 ms",
        "req/s",
        "CPU us/req",
        "above idle",
        "wake-ups/req",
        "NATS msgs/req in+out",
        "errors",
    ]
    rows = []
    for r in doc["real"].values():
        if r["kind"] != "isolated":
            continue
        via, direct = r["switchyard"], r["direct"]
        w = via["wakeups_per_request"]
        rows.append(
            [
                r["label"],
                _fmt(_ms(direct["wrk"]["latency_us"]["p50"])),
                _fmt(_ms(via["wrk"]["latency_us"]["p50"])),
                _fmt(r["added_p50_ms"]),
                _fmt(r["added_p99_ms"]),
                f"{via['wrk']['rps']:.1f}",
                f"{r['cpu_us_per_request']:.0f}",
                f"{r['cpu_above_idle_us_per_request']:.0f}",
                f"{_stack_wakeups(w):.1f}",
                f"{w['nats_in']:.1f}+{w['nats_out']:.1f}",
                str(r["errors"]),
            ]
        )
    return headers, rows


def _pair(values: list[float], digits: int = 2) -> str:
    return f"{_fmt(values[0], digits)} / {_fmt(values[1], digits)}"


def _load_rows(doc: dict[str, Any]) -> Table:
    headers = [
        "load",
        "chunks/s direct / via",
        "req/s",
        "stack cores",
        "CPU us/chunk",
        "CPU us/req",
        "added TTFT p50 / p99 ms",
        "gap distortion p50 / p99 ms (direct)",
        "chunk delay p50 / p99 ms",
        "KiB / open stream",
        "wake-ups/req",
        "NATS msgs/req",
        "loadgen cores d / v",
        "errors",
    ]
    rows = []
    for r in doc["real"].values():
        if r["kind"] != "load":
            continue
        c = r["classes"].get("streams", {})
        rows.append(
            [
                r["label"],
                f"{c.get('chunks_per_s_direct', 0):.0f}"
                f" / {c.get('chunks_per_s_switchyard', 0):.0f}",
                f"{r['requests_per_s']:.0f}",
                f"{r['stack_cores']:.2f}",
                _fmt(r["cpu_us_per_chunk"], 1),
                _fmt(r["cpu_us_per_request"], 0),
                f"{_fmt(c.get('added_ttft_p50_ms'), 2)} / {_fmt(c.get('added_ttft_p99_ms'), 2)}",
                f"{_pair(c['gap_distortion_ms_switchyard'])}"
                f" ({_pair(c['gap_distortion_ms_direct'])})"
                if c
                else "-",
                _pair(c["chunk_delay_ms_switchyard"]) if c else "-",
                _fmt(r["rss_kib_per_open_stream"], 1),
                _fmt(r["wakeups_per_request"], 1),
                _fmt(r["nats_msgs_per_request"], 1),
                f"{r['loadgen_cores']['direct']:.2f} / {r['loadgen_cores']['switchyard']:.2f}",
                str(r["errors"]),
            ]
        )
    return headers, rows


def _class_rows(doc: dict[str, Any]) -> Table:
    headers = [
        "load / class",
        "clients",
        "req/s direct",
        "req/s via",
        "rps %",
        "added p50 ms",
        "added p99 ms",
        "added TTFT p99 ms",
        "errors",
    ]
    rows = []
    for key, r in doc["real"].items():
        if r["kind"] != "load" or len(r["classes"]) < 2:
            continue
        for name, c in r["classes"].items():
            rows.append(
                [
                    f"{key} / {name}",
                    str(c["slots"]),
                    f"{c['rps_direct']:.1f}",
                    f"{c['rps_switchyard']:.1f}",
                    _fmt(c["rps_ratio"] * 100, 1),
                    _fmt(c["added_latency_p50_ms"], 2),
                    _fmt(c["added_latency_p99_ms"], 2),
                    _fmt(c.get("added_ttft_p99_ms"), 2) if c["stream"] else "-",
                    str(c["errors"]),
                ]
            )
    return headers, rows


def _real_cpu_rows(doc: dict[str, Any]) -> Table:
    """Per process: cores during each load (via Switchyard), idle ms/s and wake-ups/s."""
    real = doc["real"]
    loads = [k for k, r in real.items() if r["kind"] == "load"]
    iso = [k for k, r in real.items() if r["kind"] == "isolated"]
    idle = real.get("idle")
    names: set[str] = set()
    for k in loads:
        names |= set(real[k]["switchyard"]["cores"])
    for k in iso:
        names |= set(real[k]["switchyard"]["cpu_us_per_request"])
    if idle:
        names |= set(idle["ms_per_s"])
    headers = ["process", *(f"{k} cores" for k in loads), *(f"{k} us/req" for k in iso)]
    if idle:
        headers += ["idle ms/s", "idle wake-ups/s"]
    rows = []
    for n in sorted(names, key=_order_key):
        row = [n]
        row += [f"{real[k]['switchyard']['cores'].get(n, 0.0):.3f}" for k in loads]
        row += [f"{real[k]['switchyard']['cpu_us_per_request'].get(n, 0.0):.0f}" for k in iso]
        if idle:
            row += [
                f"{idle['ms_per_s'].get(n, 0.0):.2f}",
                f"{idle['wakeups_per_s']['wakeups'].get(n, 0.0):.1f}",
            ]
        rows.append(row)
    if idle:
        w = idle["wakeups_per_s"]
        rows.append(
            ["NATS msgs/s in + out (idle)"]
            + [""] * (len(loads) + len(iso))
            + [f"{w['nats_in']:.1f} + {w['nats_out']:.1f}", ""]
        )
        rows.append(
            ["= idle stack, % of one core"]
            + [""] * (len(loads) + len(iso))
            + [f"{idle['stack_pct']:.2f}%", ""]
        )
    return headers, rows


def _model_rows(doc: dict[str, Any]) -> Table:
    m = doc["stream_model"]
    return (
        ["stream cost model (from streams200 and streams1000)", "us CPU"],
        [
            ["per stream (request setup, first and last message)", f"{m['us_per_stream']:.0f}"],
            ["per chunk (marginal)", f"{m['us_per_chunk']:.1f}"],
        ],
    )


REAL_NOTE = (
    "Real traffic (issue 14). CPU: every Switchyard process plus nats-server. `above idle`: "
    "minus each process's idle rate over the run. Gap distortion: per chunk, arrival gap minus "
    "the upstream's send gap. KiB / open stream: stack RSS during the load minus before, per "
    "concurrent stream. Wake-ups: voluntary context switches of every thread of the stack."
)


def _sections(doc: dict[str, Any]) -> list[tuple[str, Table, str]]:
    """Every table this run has: (title, table, note)."""
    out: list[tuple[str, Table, str]] = []
    real = doc.get("real") or {}
    if any(r["kind"] == "isolated" for r in real.values()):
        out.append(("Real traffic: isolated requests", _isolated_rows(doc), REAL_NOTE))
    if any(r["kind"] == "load" for r in real.values()):
        out.append(("Real traffic: paced streams and mixed load", _load_rows(doc), ""))
        if any(r["kind"] == "load" and len(r["classes"]) > 1 for r in real.values()):
            out.append(("Mixed load by class", _class_rows(doc), ""))
    if doc.get("stream_model"):
        out.append(("Stream cost model", _model_rows(doc), ""))
    if real:
        out.append(("Real traffic: CPU by process", _real_cpu_rows(doc), ""))
    if doc["runs"]:
        out.append(("Throughput and latency (wrk)", _main_rows(doc), MAIN_NOTE))
    if doc["ttft"]:
        out.append(("Time to first token (streaming, c=1)", _ttft_rows(doc), ""))
    if doc["runs"]:
        out.append(("CPU per request by process (Switchyard runs)", _cpu_rows(doc), ""))
    if doc["limits"]:
        title = "Auth + limits: CPU per request, key with limits vs demo key"
        out.append((title, _limits_rows(doc), LIMITS_NOTE))
    if doc["routing"]:
        out.append(("Routing decision (decide.choose)", _routing_rows(doc), ROUTING_NOTE))
    return out


def render_text(doc: dict[str, Any]) -> str:
    parts = ["", "Switchyard benchmark", *_header_lines(doc), *_error_banner(doc), ""]
    for title, table, note in _sections(doc):
        parts += [f"{title}:", text_table(*table), *([note] if note else []), ""]
    if doc["targets"]:
        parts += [text_table(*_target_rows(doc)), ""]
    return "\n".join(parts)


def render_markdown(doc: dict[str, Any]) -> str:
    parts = ["# Switchyard benchmark", "", *(f"- {line}" for line in _header_lines(doc)), ""]
    banner = [line.strip("! ") for line in _error_banner(doc) if line.strip("!")]
    if banner:
        parts += [*(f"> **{line}**  " for line in banner), ""]
    if doc["targets"]:
        parts += ["## Targets", "", md_table(*_target_rows(doc)), ""]
    for title, table, note in _sections(doc):
        parts += [f"## {title}", "", md_table(*table), "", *([note, ""] if note else [])]
    parts += ["See `bench/README.md` for what each number means.", ""]
    return "\n".join(parts)


def save(doc: dict[str, Any], directory: Path = RESULTS_DIR) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "latest.json", directory / "latest.md"
    json_path.write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(doc), encoding="utf-8")
    return json_path, md_path
